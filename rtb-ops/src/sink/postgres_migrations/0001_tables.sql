-- rtb PostgreSQL sink, migration 1: the tables. Money is BIGINT KRW; times are BIGINT ms since the epoch;
-- budget days are INTEGER days since 1970-01-01 of the local date. Ids sort bytewise (COLLATE "C"),
-- as the embedded sink orders them.

CREATE TABLE advertisers (
    advertiser_id   text COLLATE "C" PRIMARY KEY,
    opening_balance bigint NOT NULL,
    -- opening_balance + the sum of this advertiser's ledger amounts
    balance         bigint NOT NULL,
    time_zone       text NOT NULL
);

-- The account history: never pruned.
CREATE TABLE ledger (
    seq             bigserial PRIMARY KEY,
    idempotency_key text NOT NULL,
    advertiser_id   text NOT NULL,
    campaign_id     text,
    kind            text NOT NULL CHECK (kind IN ('CHARGE', 'REFUND')),
    amount          bigint NOT NULL,
    event_time      bigint NOT NULL,
    reference       text NOT NULL,
    fingerprint     bytea NOT NULL,
    balance_after   bigint NOT NULL
);

-- The ledger's unique idempotency keys, with the fingerprint of the cause (Duplicate vs Conflict) and its
-- event time (pruned after the key retention; the ledger rows stay).
CREATE TABLE ledger_keys (
    idempotency_key text PRIMARY KEY,
    fingerprint     bytea NOT NULL,
    event_time      bigint NOT NULL
);

CREATE TABLE conversions (
    order_id             text COLLATE "C" PRIMARY KEY,
    device_id            text NOT NULL,
    product_id           text NOT NULL,
    campaign_id          text,
    ad_id                text,
    advertiser_id        text,
    click_timestamp      bigint,
    conversion_timestamp bigint NOT NULL,
    revenue_amount       bigint NOT NULL,
    conversion_type      text NOT NULL,
    source_topic         text,
    source_partition     bigint,
    source_offset        bigint
);

-- Later conversions of an order that already has its result, each once: `dedup` is the source
-- coordinates (topic/partition/offset) or, without them, the row's content.
CREATE TABLE duplicate_orders (
    order_id             text COLLATE "C" NOT NULL,
    dedup                text COLLATE "C" NOT NULL,
    device_id            text NOT NULL,
    product_id           text NOT NULL,
    campaign_id          text,
    ad_id                text,
    advertiser_id        text,
    click_timestamp      bigint,
    conversion_timestamp bigint NOT NULL,
    revenue_amount       bigint NOT NULL,
    conversion_type      text NOT NULL,
    source_topic         text,
    source_partition     bigint,
    source_offset        bigint,
    PRIMARY KEY (order_id, dedup)
);

CREATE TABLE campaigns (
    campaign_id       text COLLATE "C" PRIMARY KEY,
    advertiser_id     text NOT NULL,
    product_id        text,
    placement         text NOT NULL,
    category          text COLLATE "C" NOT NULL,
    bid_price         bigint NOT NULL,
    daily_budget      bigint NOT NULL,
    status            text NOT NULL,
    approval_status   text NOT NULL,
    effective_from    bigint,
    rtb_impact        text,
    -- the budget day the budget monitor paused it on (NULL: not paused by budget)
    budget_paused_day integer,
    updated_at        bigint NOT NULL
);

CREATE INDEX campaigns_by_placement_category ON campaigns (placement, category, campaign_id);

CREATE TABLE alerts (
    key           text COLLATE "C" PRIMARY KEY,
    campaign_id   text NOT NULL,
    advertiser_id text NOT NULL,
    day           integer NOT NULL,
    threshold_pct integer NOT NULL,
    spend         bigint NOT NULL,
    daily_budget  bigint NOT NULL,
    event_time    bigint NOT NULL
);
