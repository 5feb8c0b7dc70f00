-- Core payment tables: products and stock, orders, payments, refunds, disputes, the webhook ledger, audit, outbox.

CREATE TABLE products (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku               text NOT NULL UNIQUE,
    name              text NOT NULL,
    unit_amount       bigint NOT NULL CHECK (unit_amount >= 0),
    currency          text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    stripe_price_id   text UNIQUE,
    stock_available   integer NOT NULL CHECK (stock_available >= 0),
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                      text,
    status                       text NOT NULL DEFAULT 'pending' CHECK (status IN (
                                     'pending', 'paid', 'partially_refunded', 'refunded', 'disputed',
                                     'failed', 'expired', 'canceled')),
    amount_total                 bigint NOT NULL DEFAULT 0 CHECK (amount_total >= 0),
    amount_refunded              bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency                     text,
    stripe_checkout_session_id   text UNIQUE,
    stripe_payment_intent_id     text UNIQUE,
    stripe_charge_id             text UNIQUE,
    stripe_customer_id           text,
    status_reason                text,
    paid_at                      timestamptz,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);

CREATE TABLE order_items (
    order_id      uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id    bigint NOT NULL REFERENCES products (id),
    quantity      integer NOT NULL CHECK (quantity > 0),
    unit_amount   bigint NOT NULL CHECK (unit_amount >= 0),
    currency      text NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- held -> committed (payment succeeded) | released (failure, expiry, cancellation, sweeper).
-- released -> committed only when a payment arrives after the release: the stock is taken again, once.
CREATE TABLE stock_reservations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id    bigint NOT NULL REFERENCES products (id),
    quantity      integer NOT NULL CHECK (quantity > 0),
    state         text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'committed', 'released')),
    expires_at    timestamptz NOT NULL,
    release_reason text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, product_id)
);
CREATE INDEX stock_reservations_held_idx ON stock_reservations (expires_at) WHERE state = 'held';

CREATE TABLE payments (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id                   uuid NOT NULL REFERENCES orders (id),
    stripe_payment_intent_id   text UNIQUE,
    stripe_charge_id           text UNIQUE,
    amount                     bigint NOT NULL,
    currency                   text NOT NULL,
    status                     text NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_order_idx ON payments (order_id);

CREATE TABLE refunds (
    stripe_refund_id   text PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id),
    stripe_charge_id   text,
    amount             bigint NOT NULL CHECK (amount >= 0),
    currency           text NOT NULL,
    status             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_order_idx ON refunds (order_id);

CREATE TABLE disputes (
    stripe_dispute_id  text PRIMARY KEY,
    order_id           uuid NOT NULL REFERENCES orders (id),
    stripe_charge_id   text,
    amount             bigint NOT NULL,
    currency           text NOT NULL,
    reason             text,
    status             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- The ledger of every verified Stripe event (the seeds' PaymentEvent / WebhookEvent).
CREATE TABLE webhook_events (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_event_id       text NOT NULL UNIQUE,
    type                  text NOT NULL,
    api_version           text,
    livemode              boolean NOT NULL,
    stripe_created        timestamptz NOT NULL,
    received_at           timestamptz NOT NULL DEFAULT now(),
    processed_at          timestamptz,
    status                text NOT NULL CHECK (status IN ('received', 'processed', 'ignored', 'stale', 'failed')),
    outcome_reason        text,
    attempts              integer NOT NULL DEFAULT 0,
    request_id            text,
    order_id              uuid,
    checkout_session_id   text,
    payment_intent_id     text,
    charge_id             text,
    subscription_id       text,
    customer_id           text,
    payload               jsonb NOT NULL,
    last_error            text
);
CREATE INDEX webhook_events_session_idx ON webhook_events (checkout_session_id) WHERE checkout_session_id IS NOT NULL;
CREATE INDEX webhook_events_order_idx ON webhook_events (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX webhook_events_intent_idx ON webhook_events (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
CREATE INDEX webhook_events_pending_idx ON webhook_events (received_at) WHERE status IN ('received', 'failed');

CREATE TABLE audit_log (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    actor            text NOT NULL,
    action           text NOT NULL,
    subject_type     text NOT NULL,
    subject_id       text NOT NULL,
    order_id         uuid,
    stripe_event_id  text,
    request_id       text,
    details          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_order_idx ON audit_log (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX audit_log_event_idx ON audit_log (stripe_event_id) WHERE stripe_event_id IS NOT NULL;

-- Transactional outbox: the event bridge. Written in the same transaction as the change it announces.
CREATE TABLE bridge_events (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type        text NOT NULL,
    user_id           text,
    app_source        text NOT NULL,
    payload           jsonb NOT NULL,
    metadata          jsonb NOT NULL,
    source_event_id   text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_event_id, event_type)
);
