-- Local accounts get their own subject namespace: a local user's id is 'local:' || users.id, so an identity
-- provider's user can never share it (gateway/accounts/tokens.py). Rows written for local users before this
-- release carry the bare uuid; they move to the prefixed id. Bridge events and audit rows are a record of what
-- was published and done at the time, and stay as they are.
UPDATE orders SET user_id = 'local:' || user_id
 WHERE user_id IN (SELECT id::text FROM users);
UPDATE checkout_requests SET user_id = 'local:' || user_id
 WHERE user_id IN (SELECT id::text FROM users);
UPDATE customers SET user_id = 'local:' || user_id
 WHERE user_id IN (SELECT id::text FROM users);
UPDATE subscriptions SET user_id = 'local:' || user_id
 WHERE user_id IN (SELECT id::text FROM users);

-- Stock holds are bounded per client address too (gateway/checkout/holds.py): the checkout records who asked, as
-- a hash of the rate-limit key of the client address (never the address itself).
ALTER TABLE orders ADD COLUMN checkout_client text;
CREATE INDEX orders_checkout_client_pending_idx ON orders (checkout_client) WHERE status = 'pending';
