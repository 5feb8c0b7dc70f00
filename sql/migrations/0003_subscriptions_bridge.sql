-- Subscriptions (seed 001), who the Stripe customer is, the relay cursor of the external event bridge and the
-- delivery record of order e-mails (seed 002).

-- Stripe customer -> gateway user, learned from checkout sessions (client_reference_id / metadata.user_id) and
-- from subscriptions carrying metadata.user_id. The first mapping learned is kept.
CREATE TABLE customers (
    stripe_customer_id  text PRIMARY KEY,
    user_id             text NOT NULL,
    source_event_id     text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_user_idx ON customers (user_id);

-- One row per Stripe subscription. Out-of-order safety: `state_version` and `object_version` are sortable keys
-- (see gateway/subscriptions/ordering.py) of the observation that set the status and the subscription fields;
-- an event only wins when its key is greater, so the row is the same whatever order events arrive in.
CREATE TABLE subscriptions (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stripe_subscription_id   text NOT NULL UNIQUE,
    user_id                  text,
    stripe_customer_id       text,
    checkout_session_id      text,
    price_id                 text,
    plan_id                  text,
    status                   text NOT NULL CHECK (status IN (
                                 'pending', 'incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due',
                                 'canceled', 'unpaid', 'paused')),
    current_period_end       timestamptz,
    cancel_at_period_end     boolean NOT NULL DEFAULT false,
    canceled_at              timestamptz,
    currency                 text,
    amount                   bigint,
    state_version            text NOT NULL DEFAULT '',
    object_version           text NOT NULL DEFAULT '',
    last_event_created       timestamptz,
    last_event_id            text,
    activated_at             timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX subscriptions_customer_idx ON subscriptions (stripe_customer_id) WHERE stripe_customer_id IS NOT NULL;

CREATE INDEX bridge_events_type_idx ON bridge_events (event_type, id);
CREATE INDEX bridge_events_user_idx ON bridge_events (user_id, id) WHERE user_id IS NOT NULL;

-- Where the relay to the external bridge database (EVENT_BRIDGE_DATABASE_URL) stands: every bridge event with
-- an id <= last_id has been copied. Bridge ids follow commit order (gateway/unit_of_work.py takes a
-- transaction-scoped advisory lock before writing bridge rows), so a cursor on the id never skips a row.
CREATE TABLE bridge_relay_state (
    target       text PRIMARY KEY,
    last_id      bigint NOT NULL DEFAULT 0,
    relayed      bigint NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Order confirmation e-mails: one row per ORDER_PAID bridge event, so a restart never resends what was sent.
CREATE TABLE email_deliveries (
    bridge_event_id   bigint PRIMARY KEY REFERENCES bridge_events (id),
    kind              text NOT NULL,
    order_id          uuid,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    sent_at           timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, order_id)
);
CREATE INDEX email_deliveries_due_idx ON email_deliveries (next_attempt_at) WHERE status = 'pending';
