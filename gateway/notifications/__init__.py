"""Notifications sent from bridge events (order confirmation e-mails)."""
