"""The OpenAPI 3.1 contract of the public routes (`openapi.yaml` here), served at /openapi.json."""
