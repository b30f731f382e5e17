-- rtb PostgreSQL sink, migration 2: ledger batches in one round trip, and the key-pruning index.

CREATE INDEX ledger_keys_by_event_time ON ledger_keys (event_time);

-- Applies ledger entries in order, in the caller's transaction: per entry, claim the idempotency key
-- (waiting for a concurrent claimer to commit or roll back), then move the balance and write the row.
-- r_outcome: 0 applied (r_balance = the balance after it), 1 duplicate (same fingerprint), 2 conflict.
CREATE FUNCTION apply_ledger_batch(
    p_keys text[], p_advertisers text[], p_campaigns text[], p_kinds text[], p_amounts bigint[],
    p_times bigint[], p_refs text[], p_fingerprints bytea[], p_default_time_zone text
) RETURNS TABLE (r_outcome smallint, r_balance bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    i   integer;
    fp  bytea;
    bal bigint;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        INSERT INTO ledger_keys (idempotency_key, fingerprint, event_time)
            VALUES (p_keys[i], p_fingerprints[i], p_times[i])
            ON CONFLICT (idempotency_key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.fingerprint INTO fp FROM ledger_keys k WHERE k.idempotency_key = p_keys[i];
            r_outcome := CASE WHEN fp = p_fingerprints[i] THEN 1 ELSE 2 END;
            r_balance := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO advertisers AS a (advertiser_id, opening_balance, balance, time_zone)
            VALUES (p_advertisers[i], 0, p_amounts[i], p_default_time_zone)
            ON CONFLICT (advertiser_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance
            RETURNING a.balance INTO bal;
        INSERT INTO ledger (idempotency_key, advertiser_id, campaign_id, kind, amount, event_time, reference,
                            fingerprint, balance_after)
            VALUES (p_keys[i], p_advertisers[i], p_campaigns[i], p_kinds[i], p_amounts[i], p_times[i], p_refs[i],
                    p_fingerprints[i], bal);
        r_outcome := 0;
        r_balance := bal;
        RETURN NEXT;
    END LOOP;
END
$$;
