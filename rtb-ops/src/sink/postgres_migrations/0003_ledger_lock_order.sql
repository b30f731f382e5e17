-- rtb PostgreSQL sink, migration 3: ledger batches lock their advertisers in id order first (concurrent
-- batches over the same advertisers in different orders deadlocked, and were retried).

CREATE OR REPLACE FUNCTION apply_ledger_batch(
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
    -- Lock the batch's existing advertisers in one order (by id) before touching any: concurrent batches
    -- over the same advertisers then queue instead of deadlocking. (A new advertiser is created, and
    -- locked, where its first entry applies.)
    PERFORM 1 FROM advertisers WHERE advertiser_id = ANY (p_advertisers) ORDER BY advertiser_id FOR UPDATE;
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
