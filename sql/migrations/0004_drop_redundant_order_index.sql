-- orders_user_page_idx (user_id, created_at DESC, id DESC) serves every look-up orders_user_idx
-- (user_id, created_at DESC) served; keeping both cost one more index entry on every order insert and on every
-- order update that cannot be HOT (a payment writes the payment intent and charge ids).
DROP INDEX IF EXISTS orders_user_idx;
