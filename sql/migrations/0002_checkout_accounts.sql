-- Checkout API and local accounts: the checkout link kept on the order, Idempotency-Key records of checkout
-- requests, local users (argon2id hashes) and refresh tokens (hashes only, grouped in rotation families).

-- The Stripe Checkout Session url and its expiry (= the expiry of the order's stock reservations).
ALTER TABLE orders ADD COLUMN checkout_url text;
ALTER TABLE orders ADD COLUMN checkout_expires_at timestamptz;
CREATE INDEX orders_user_page_idx ON orders (user_id, created_at DESC, id DESC);

-- `Idempotency-Key` of POST /v1/checkout/sessions, scoped by user. The row is written in the transaction that
-- creates the order; `response` is filled once the Stripe session exists. A failed attempt deletes its row in the
-- compensating transaction, so the same key may be retried.
CREATE TABLE checkout_requests (
    user_id          text NOT NULL,
    idempotency_key  text NOT NULL,
    request_hash     text NOT NULL,
    order_id         uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    response         jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);
CREATE INDEX checkout_requests_created_idx ON checkout_requests (created_at);

-- Local accounts (AUTH_LOCAL_ENABLED). `email` is stored lower-cased; `password_hash` is an argon2id PHC string.
CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email          text NOT NULL UNIQUE CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 320),
    password_hash  text NOT NULL,
    roles          text[] NOT NULL DEFAULT '{}',
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens: only the SHA-256 of each token is stored. A login starts a family; each refresh marks the
-- presented token used (`replaced_by`) and issues the next one of the family. A used or revoked token presented
-- again revokes the whole family.
CREATE TABLE refresh_tokens (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id      uuid NOT NULL,
    token_hash     bytea NOT NULL UNIQUE,
    replaced_by    uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    issued_at      timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    revoked_at     timestamptz,
    revoke_reason  text
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
