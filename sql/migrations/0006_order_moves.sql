-- unit_of_work_flush learns to decide a move itself (UnitOfWork.apply_move, gateway/unit_of_work.py), so that the
-- common payment event costs one round trip: when all it asks is "may the order move from its status to this
-- one?", the answer needs the order row, and the function takes it on the locked row instead of the gateway
-- reading the row first. Its signature grows, so this is a new function of the same name; the 45-parameter one
-- of migration 0005 stays, because pods of the previous release keep calling it until a rollout replaces them
-- (migrations run before the rollout). A later migration drops it.

-- One delivery's write. Optimistic mode (p_guard_order given): the order row is locked only if it still has the
-- version (xmin) the handler decided on; otherwise nothing is written and `gated` is false.
--
-- Move mode (m_sources given, nothing else recorded): the function decides, as the handler would
-- (gateway/webhooks/handlers/orders.py; tests/test_webhook_moves.py compares the rows both write). An event
-- settled before is a duplicate (nothing written, `settled` false). Otherwise it locks the order the keys find
-- (FIND_ORDER's look-up, gateway/orders/queries.py), and `decided` says what it wrote with the ledger row:
--   moved    the order's status is one of m_sources: what `_transition` writes for an allowed move, for that
--            order (`moved_order`): the order's change (c_*), the payment (pay_*; its currency, when the event
--            has none, is the order's), the stock commit or release (m_stock), the audit row and the bridge event
--            of type m_bridge_type, built from the locked row as `_transition` and `_publish` build them;
--   already  the order has the status already: its change (the event may bring ids it did not know) and the
--            payment, the ledger's reason m_already_reason;
--   missing  no order matches and the handler would say so (m_missing_reason given): the ledger row alone,
--            `ignored` with that reason.
-- Anything else (a status the move does not apply to; no order, where the handler might create one): nothing is
-- written and `gated` is false; the gateway then reads the order and runs the handler. The ledger row is
-- written once, in its final state: inserted, or taken over when an earlier attempt failed (or the kill switch
-- left it `received`). When another delivery of the same event settled it first, nothing is written and
-- `settled` is false. Bridge events take the bridge lock (shared) before they draw an id, and are announced with
-- NOTIFY, which PostgreSQL delivers only when the transaction commits.
CREATE FUNCTION unit_of_work_flush(
    p_actor text, p_event_id text, p_request_id text, p_audits jsonb,
    p_app_source text, p_bridge_events jsonb, p_bridge_lock bigint,
    p_type text, p_api_version text, p_livemode boolean, p_stripe_created timestamptz, p_status text,
    p_reason text, p_order_id uuid, p_checkout_session_id text, p_payment_intent_id text, p_charge_id text,
    p_subscription_id text, p_customer_id text, p_payload jsonb,
    p_bridge_metadata jsonb, p_bridge_channel text,
    c_order uuid, c_status text, c_reason text, c_amount_total bigint, c_currency text,
    c_checkout_session_id text, c_payment_intent_id text, c_charge_id text, c_customer_id text,
    c_paid_at timestamptz, c_amount_refunded bigint, c_later jsonb,
    pay_order uuid, pay_payment_intent_id text, pay_charge_id text, pay_amount bigint, pay_currency text,
    pay_status text,
    p_commit_order uuid, p_release_order uuid, p_release_reason text,
    p_guard_order uuid, p_guard_version xid,
    m_sources text[], k_order uuid, k_checkout_session_id text, k_payment_intent_id text, k_charge_id text,
    m_stock text, m_bridge_type text, m_already_reason text, m_missing_reason text,
    OUT gated boolean, OUT settled boolean, OUT oversold bigint[], OUT types text[], OUT decided text,
    OUT moved_order text
) LANGUAGE plpgsql AS $$
DECLARE
    o orders%ROWTYPE;
    ledger_id bigint;
    later integer := 0;
    released bigint[];
    res record;
    bridge record;
BEGIN
    gated := true;
    settled := false;
    oversold := '{}';
    types := '{}';
    IF m_sources IS NOT NULL THEN
        PERFORM FROM webhook_events
        WHERE stripe_event_id = p_event_id AND status IN ('processed', 'ignored', 'stale');
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT * INTO o FROM orders
        WHERE id = coalesce(
            (SELECT id FROM orders WHERE id = k_order),
            (SELECT id FROM orders WHERE stripe_checkout_session_id = k_checkout_session_id),
            (SELECT id FROM orders WHERE stripe_payment_intent_id = k_payment_intent_id),
            (SELECT id FROM orders WHERE stripe_charge_id = k_charge_id)
        )
        FOR UPDATE;
        IF NOT FOUND THEN
            IF m_missing_reason IS NULL THEN
                gated := false;
                RETURN;
            END IF;
            decided := 'missing';
            p_status := 'ignored';
            p_reason := m_missing_reason;
        ELSIF o.status = c_status OR o.status = ANY (m_sources) THEN
            decided := CASE WHEN o.status = c_status THEN 'already' ELSE 'moved' END;
            moved_order := o.id::text;
            p_order_id := o.id;
            c_order := o.id;
            IF pay_status IS NOT NULL THEN
                pay_order := o.id;
                pay_currency := coalesce(nullif(pay_currency, ''), nullif(o.currency, ''), '');
            END IF;
        ELSE
            gated := false;
            RETURN;
        END IF;
        IF decided = 'already' THEN
            p_reason := m_already_reason;
        ELSIF decided = 'moved' THEN
            IF m_stock = 'commit' THEN
                p_commit_order := o.id;
            ELSIF m_stock = 'release' THEN
                p_release_order := o.id;
            END IF;
            p_audits := jsonb_build_array(jsonb_build_object(
                'action', 'order.' || c_status, 'subject_type', 'order', 'subject_id', o.id::text, 'order_id', o.id,
                'details', jsonb_build_object('previous', o.status, 'reason', c_reason)));
            p_bridge_events := jsonb_build_array(jsonb_build_object(
                'event_type', m_bridge_type,
                'user_id', o.user_id,
                'payload', jsonb_build_object(
                    'order_id', o.id::text,
                    'status', c_status,
                    'amount', coalesce(nullif(o.amount_total, 0), nullif(c_amount_total, 0), 0),
                    'amount_refunded', greatest(o.amount_refunded, c_amount_refunded),
                    'currency', coalesce(nullif(o.currency, ''), c_currency),
                    'session_id', coalesce(nullif(o.stripe_checkout_session_id, ''), c_checkout_session_id),
                    'payment_intent_id', coalesce(nullif(o.stripe_payment_intent_id, ''), c_payment_intent_id),
                    'customer_id', coalesce(nullif(o.stripe_customer_id, ''), c_customer_id),
                    'source', 'stripe')));
        END IF;
    ELSIF p_guard_order IS NOT NULL THEN
        PERFORM FROM orders WHERE id = p_guard_order AND xmin = p_guard_version FOR UPDATE;
        IF NOT FOUND THEN
            gated := false;
            RETURN;
        END IF;
    END IF;

    INSERT INTO webhook_events (
        stripe_event_id, type, api_version, livemode, stripe_created, status, outcome_reason, attempts, request_id,
        order_id, checkout_session_id, payment_intent_id, charge_id, subscription_id, customer_id, payload,
        processed_at)
    VALUES (
        p_event_id, p_type, p_api_version, p_livemode, p_stripe_created, p_status, p_reason, 1, p_request_id,
        p_order_id, p_checkout_session_id, p_payment_intent_id, p_charge_id, p_subscription_id, p_customer_id,
        p_payload, CASE WHEN p_status = 'received' THEN NULL ELSE now() END)
    ON CONFLICT (stripe_event_id) DO UPDATE SET
        status = EXCLUDED.status,
        outcome_reason = EXCLUDED.outcome_reason,
        attempts = webhook_events.attempts + 1,
        request_id = EXCLUDED.request_id,
        order_id = coalesce(EXCLUDED.order_id, webhook_events.order_id),
        processed_at = EXCLUDED.processed_at,
        last_error = NULL
    WHERE webhook_events.status IN ('failed', 'received')
    RETURNING id INTO ledger_id;
    IF ledger_id IS NULL THEN
        RETURN;
    END IF;
    settled := true;

    IF jsonb_array_length(p_audits) > 0 THEN
        INSERT INTO audit_log (actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
        SELECT p_actor, a.action, a.subject_type, a.subject_id, a.order_id, p_event_id, p_request_id, a.details
        FROM jsonb_to_recordset(p_audits)
             AS a (action text, subject_type text, subject_id text, order_id uuid, details jsonb);
    END IF;
    -- The order's change (c_*), then any later ones (c_later, a JSON array of the same fields) in the order they
    -- were made: a refund that arrives before its payment also implies the payment, so the order is paid, then
    -- refunded. The earliest payment time seen wins (least() ignores NULLs); the refunded amount only grows.
    LOOP
        EXIT WHEN c_order IS NULL;
        UPDATE orders SET
            status = c_status,
            status_reason = CASE WHEN status = c_status THEN coalesce(c_reason, status_reason) ELSE c_reason END,
            amount_total = CASE WHEN amount_total = 0 THEN coalesce(c_amount_total, 0) ELSE amount_total END,
            currency = coalesce(currency, c_currency),
            stripe_checkout_session_id = coalesce(stripe_checkout_session_id, c_checkout_session_id),
            stripe_payment_intent_id = coalesce(stripe_payment_intent_id, c_payment_intent_id),
            stripe_charge_id = coalesce(stripe_charge_id, c_charge_id),
            stripe_customer_id = coalesce(stripe_customer_id, c_customer_id),
            paid_at = least(paid_at, c_paid_at),
            amount_refunded = greatest(amount_refunded, c_amount_refunded),
            updated_at = now()
        WHERE id = c_order;
        EXIT WHEN c_later IS NULL OR later >= jsonb_array_length(c_later);
        SELECT * INTO c_order, c_status, c_reason, c_amount_total, c_currency, c_checkout_session_id,
                      c_payment_intent_id, c_charge_id, c_customer_id, c_paid_at, c_amount_refunded
        FROM jsonb_to_record(c_later -> later) AS change (
            order_id uuid, status text, reason text, amount_total bigint, currency text, checkout_session_id text,
            payment_intent_id text, charge_id text, customer_id text, paid_at timestamptz, amount_refunded bigint);
        later := later + 1;
    END LOOP;
    IF pay_order IS NOT NULL THEN
        -- A succeeded payment stays succeeded; its charge id is kept once known.
        INSERT INTO payments (order_id, stripe_payment_intent_id, stripe_charge_id, amount, currency, status)
        VALUES (pay_order, pay_payment_intent_id, pay_charge_id, pay_amount, pay_currency, pay_status)
        ON CONFLICT (stripe_payment_intent_id) DO UPDATE SET
            stripe_charge_id = coalesce(payments.stripe_charge_id, EXCLUDED.stripe_charge_id),
            status = CASE WHEN payments.status = 'succeeded' THEN payments.status ELSE EXCLUDED.status END,
            updated_at = now();
    END IF;
    IF p_commit_order IS NOT NULL THEN
        -- The paid order's reservations become sales, every one of them locked first, in product order. Held
        -- units left stock when they were reserved. A reservation the sweeper is releasing right now is waited
        -- for and then seen released.
        WITH locked AS (
            SELECT id, state FROM stock_reservations
            WHERE order_id = p_commit_order AND state IN ('held', 'released')
            ORDER BY product_id
            FOR UPDATE
        ), committed AS (
            UPDATE stock_reservations r SET state = 'committed', release_reason = NULL, updated_at = now()
            FROM locked
            WHERE r.id = locked.id AND locked.state = 'held'
        )
        SELECT coalesce(array_agg(id) FILTER (WHERE state = 'released'), '{}') INTO released FROM locked;
        -- Released ones (expired or failed, then paid after all) take their units again if they are still in
        -- stock, products locked in id order; units sold to others meanwhile make the order oversold (logged and
        -- audited).
        IF cardinality(released) > 0 THEN
            FOR res IN
                SELECT id, product_id, quantity FROM stock_reservations WHERE id = ANY (released) ORDER BY product_id
            LOOP
                UPDATE products SET stock_available = stock_available - res.quantity, updated_at = now()
                WHERE id = res.product_id AND stock_available >= res.quantity;
                IF FOUND THEN
                    UPDATE stock_reservations SET state = 'committed', release_reason = NULL, updated_at = now()
                    WHERE id = res.id;
                ELSE
                    oversold := oversold || res.product_id;
                END IF;
            END LOOP;
        END IF;
        IF cardinality(oversold) > 0 THEN
            INSERT INTO audit_log (
                actor, action, subject_type, subject_id, order_id, stripe_event_id, request_id, details)
            VALUES (
                p_actor, 'stock.oversold', 'order', p_commit_order::text, p_commit_order, p_event_id, p_request_id,
                jsonb_build_object('products', oversold));
        END IF;
    END IF;
    IF p_release_order IS NOT NULL THEN
        PERFORM stock_release_for_order(p_release_order, p_release_reason);
    END IF;

    IF jsonb_array_length(p_bridge_events) > 0 THEN
        PERFORM pg_advisory_xact_lock_shared(p_bridge_lock);
        FOR bridge IN
            INSERT INTO bridge_events (event_type, user_id, app_source, payload, metadata, source_event_id)
            SELECT b.event_type, b.user_id, p_app_source, b.payload, p_bridge_metadata, p_event_id
            FROM jsonb_to_recordset(p_bridge_events) AS b (event_type text, user_id text, payload jsonb)
            ON CONFLICT (source_event_id, event_type) DO NOTHING
            RETURNING id, event_type
        LOOP
            PERFORM pg_notify(p_bridge_channel, bridge.id::text || ':' || bridge.event_type);
            types := types || bridge.event_type;
        END LOOP;
    END IF;
END
$$;
