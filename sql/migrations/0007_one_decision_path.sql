-- One decision path for webhook events: every rule lives in Python (gateway/webhooks/handlers,
-- gateway/orders/state_machine.py), each delivery is one transaction of plain statements. The server-side write
-- functions of migrations 0005 and 0006 go; so does the stock release function (a named statement now,
-- gateway/stock.py).
DROP FUNCTION IF EXISTS unit_of_work_flush(
    text, text, text, jsonb, text, jsonb, bigint,
    text, text, boolean, timestamptz, text, text, uuid, text, text, text, text, text, jsonb, jsonb, text,
    uuid, text, text, bigint, text, text, text, text, text, timestamptz, bigint, jsonb,
    uuid, text, text, bigint, text, text,
    uuid, uuid, text,
    uuid, xid);
DROP FUNCTION IF EXISTS unit_of_work_flush(
    text, text, text, jsonb, text, jsonb, bigint,
    text, text, boolean, timestamptz, text, text, uuid, text, text, text, text, text, jsonb, jsonb, text,
    uuid, text, text, bigint, text, text, text, text, text, timestamptz, bigint, jsonb,
    uuid, text, text, bigint, text, text,
    uuid, uuid, text,
    uuid, xid,
    text[], uuid, text, text, text, text, text, text, text);
DROP FUNCTION IF EXISTS stock_release_for_order(uuid, text);

-- The ledger: `waiting` keeps an event that names its order only by Stripe ids no order knows yet (a dispute or
-- a refund before the payment events); it is applied in the transaction of the event that makes the order
-- known. `origin` says how the event reached the gateway. `raw_body` keeps the exact bytes of a signed event
-- that cannot be stored as JSON (a NUL character, a lone surrogate, an impossible value), recorded `ignored`.
ALTER TABLE webhook_events DROP CONSTRAINT IF EXISTS webhook_events_status_check;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_status_check
    CHECK (status IN ('received', 'processed', 'ignored', 'stale', 'failed', 'waiting'));
ALTER TABLE webhook_events ADD COLUMN origin text NOT NULL DEFAULT 'webhook'
    CHECK (origin IN ('webhook', 'replay', 'reconcile', 'resync'));
ALTER TABLE webhook_events ADD COLUMN raw_body bytea;
CREATE INDEX webhook_events_waiting_idx ON webhook_events (received_at) WHERE status = 'waiting';
CREATE INDEX webhook_events_charge_idx ON webhook_events (charge_id) WHERE charge_id IS NOT NULL;

-- Orders: a lost dispute is its own outcome. `charge_refunded_*` keep the newest `charge.refunded` snapshot of the
-- charge's refunded amount (for API versions whose charge carries no list of refunds).
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check CHECK (status IN (
    'pending', 'paid', 'partially_refunded', 'refunded', 'disputed', 'dispute_lost',
    'failed', 'expired', 'canceled'));
ALTER TABLE orders ADD COLUMN charge_refunded_amount bigint;
ALTER TABLE orders ADD COLUMN charge_refunded_at timestamptz;

-- Payments: the status keeps the Stripe time of the event that set it, so a late event never overwrites a newer one.
ALTER TABLE payments ADD COLUMN status_at timestamptz;

-- Refunds: the time of the event that set the status (a newer event wins; same second: later in the lifecycle),
-- the reason, and when it failed (a failed refund gives its amount back to the order).
ALTER TABLE refunds ADD COLUMN status_at timestamptz;
ALTER TABLE refunds ADD COLUMN reason text;
ALTER TABLE refunds ADD COLUMN failed_at timestamptz;

-- Disputes: the whole lifecycle (created, updated, closed won or lost, funds withdrawn and reinstated) and the
-- evidence due date.
ALTER TABLE disputes ADD COLUMN status_at timestamptz;
ALTER TABLE disputes ADD COLUMN evidence_due_by timestamptz;
ALTER TABLE disputes ADD COLUMN funds_withdrawn_at timestamptz;
ALTER TABLE disputes ADD COLUMN funds_reinstated_at timestamptz;
ALTER TABLE disputes ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX disputes_order_idx ON disputes (order_id);
CREATE INDEX disputes_due_idx ON disputes (evidence_due_by)
    WHERE status IN ('needs_response', 'warning_needs_response');

-- Order e-mails whose payment is known before the customer's address wait for it.
ALTER TABLE email_deliveries DROP CONSTRAINT IF EXISTS email_deliveries_status_check;
ALTER TABLE email_deliveries ADD CONSTRAINT email_deliveries_status_check
    CHECK (status IN ('pending', 'waiting_address', 'sent', 'failed', 'skipped'));
