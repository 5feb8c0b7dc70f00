"""Checkout Session parameters every checkout shares, whatever its mode: promotion codes and Stripe Tax.

- CHECKOUT_ALLOW_PROMOTION_CODES: `allow_promotion_codes` (the order's discount then comes from the completed
  session's `total_details.amount_discount`);
- CHECKOUT_AUTOMATIC_TAX: `automatic_tax[enabled]` (the tax from `total_details.amount_tax`);
- CHECKOUT_TAX_ID_COLLECTION: `tax_id_collection[enabled]` (the ids from `customer_details.tax_ids`).
With an existing Stripe customer, Stripe requires the address and name entered in Checkout to be saved on it
(`customer_update`) for automatic tax and tax id collection.
"""

from __future__ import annotations

from typing import Any

from gateway.settings import Settings


def session_options(settings: Settings, *, existing_customer: bool = False) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.checkout_allow_promotion_codes:
        options["allow_promotion_codes"] = True
    if settings.checkout_automatic_tax:
        options["automatic_tax"] = {"enabled": True}
    if settings.checkout_tax_id_collection:
        options["tax_id_collection"] = {"enabled": True}
    if existing_customer:
        update: dict[str, str] = {}
        if settings.checkout_automatic_tax:
            update["address"] = "auto"
        if settings.checkout_tax_id_collection:
            update["name"] = "auto"
        if update:
            options["customer_update"] = update
    return options
