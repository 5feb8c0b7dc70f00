"""The product catalog: the public product list and `gateway products import`."""
