"""Billing from our side: subscription checkout, plan changes, the customer portal and refunds.

Every call to Stripe goes through `stripe_calls.call` (official SDK, async client, an idempotency key on every
mutating call). The API answers with what Stripe returned and never writes an order's status or a subscription
row itself: the webhook that confirms the change does (gateway/webhooks/handlers/).
"""
