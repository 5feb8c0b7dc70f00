-- Billing from our side (issue 22): subscription checkouts, refunds requested by the gateway, and what Stripe's
-- sessions, charges and invoices say about discounts, tax, receipts and invoices.
--
-- The API never writes an order's status or a subscription row itself: these columns are filled by the webhook
-- handlers from the events that confirm a change (gateway/stripe_payload.py reads them from the payloads).

-- What the completed Checkout Session said about the order's amounts (checkout.session.completed):
-- amount_subtotal, total_details.amount_discount, total_details.amount_tax; the customer's tax ids
-- (customer_details.tax_ids, [{type, value}]); and the charge's receipt (charge.*: receipt_url).
ALTER TABLE orders ADD COLUMN amount_subtotal bigint CHECK (amount_subtotal >= 0);
ALTER TABLE orders ADD COLUMN amount_discount bigint NOT NULL DEFAULT 0 CHECK (amount_discount >= 0);
ALTER TABLE orders ADD COLUMN amount_tax bigint NOT NULL DEFAULT 0 CHECK (amount_tax >= 0);
ALTER TABLE orders ADD COLUMN customer_tax_ids jsonb NOT NULL DEFAULT '[]';
ALTER TABLE orders ADD COLUMN receipt_url text;

-- The subscription's latest invoice (invoice.* events): kept only when newer (invoice `created`, then id), so a
-- late event for an older invoice never replaces the links of a newer one.
ALTER TABLE subscriptions ADD COLUMN latest_invoice_id text;
ALTER TABLE subscriptions ADD COLUMN latest_invoice_created timestamptz;
ALTER TABLE subscriptions ADD COLUMN latest_invoice_hosted_url text;
ALTER TABLE subscriptions ADD COLUMN latest_invoice_pdf text;

-- A subscription checkout started by POST /v1/checkout/sessions (mode subscription). One open checkout per user
-- and plan: a second one answers 409 with the first one's link. `idempotency_key` is the client's
-- Idempotency-Key (scoped by user); `response` is the answer a retry with that key gets.
CREATE TABLE subscription_checkouts (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                     text NOT NULL,
    plan_id                     text NOT NULL,
    price_id                    text NOT NULL,
    trial_days                  integer NOT NULL DEFAULT 0 CHECK (trial_days >= 0),
    idempotency_key             text,
    request_hash                text NOT NULL,
    stripe_checkout_session_id  text UNIQUE,
    checkout_url                text,
    expires_at                  timestamptz NOT NULL,
    response                    jsonb,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX subscription_checkouts_user_plan_idx ON subscription_checkouts (user_id, plan_id, expires_at DESC);

-- A refund asked from our side (POST /v1/admin/orders/{id}/refunds, `gateway orders refund`). `requested`: the
-- Stripe call may not have happened yet (a retry with the same Idempotency-Key sends it again with the same
-- Stripe idempotency key); `created`: Stripe created the refund (`stripe_refund_id`); `failed`: Stripe refused,
-- the amount no longer counts against what is left to refund. The order changes only when the refund's webhook
-- arrives (refund.created / charge.refunded).
CREATE TABLE refund_requests (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id          uuid NOT NULL REFERENCES orders (id),
    idempotency_key   text NOT NULL,
    request_hash      text NOT NULL,
    actor             text NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL,
    reason            text NOT NULL CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    status            text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'created', 'failed')),
    stripe_refund_id  text UNIQUE,
    stripe_status     text,
    failure_code      text,
    response          jsonb,
    request_id        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, idempotency_key)
);
CREATE INDEX refund_requests_order_idx ON refund_requests (order_id);
