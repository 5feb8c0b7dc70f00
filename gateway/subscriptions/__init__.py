"""Subscriptions (seed 001): the subscriptions table, who the user is, the price -> plan mapping,
entitlements."""
