use super::*;
use rtb_stream::time::HOUR;

const NOW: i64 = 1_705_314_600_000; // 2024-01-15T10:30:00Z

fn coord() -> SourceCoord {
    SourceCoord::new("ad-events", 0, 7)
}

fn click_json() -> serde_json::Value {
    serde_json::json!({
        "event_type": "CLICK", "timestamp": "2024-01-15T10:30:00Z", "device_id": "device_12345",
        "session_id": "session_67890", "ad_id": "ad_001", "campaign_id": "campaign_100",
        "advertiser_id": "advertiser_50", "product_id": "product_200", "placement": "HOME",
        "bid_price": 1500, "actual_price": 1200, "search_term": "노트북", "category": "전자제품/컴퓨터"
    })
}

fn ad_with(f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Result<AdEvent, Invalid> {
    let mut v = click_json();
    if let serde_json::Value::Object(m) = &mut v {
        f(m);
    }
    decode_ad_event(v.to_string().as_bytes(), &coord(), NOW)
}

#[test]
fn valid_click_decodes_with_borrowed_and_escaped_strings() {
    let ev = ad_with(|_| {}).expect("valid");
    assert_eq!(ev.timestamp, NOW);
    assert_eq!((ev.bid_price, ev.actual_price), (Some(1500), Some(1200)));
    assert_eq!(ev.category, "전자제품/컴퓨터");
    // The same event with every non-ASCII character escaped as \uXXXX.
    let escaped = br#"{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"d\"1","ad_id":"a","campaign_id":"c","advertiser_id":"v","product_id":"p","placement":"SEARCH","category":"\uc804\uc790","bid_price":5,"actual_price":5}"#;
    let ev = decode_ad_event(escaped, &coord(), NOW).expect("escaped strings");
    assert_eq!(ev.category, "전자");
    assert_eq!(ev.device_id, "d\"1");
}

#[test]
fn unknown_fields_are_ignored_and_null_optional_fields_are_absent() {
    let ev = ad_with(|m| {
        m.insert("brand_new_field".into(), serde_json::json!({"nested": [1, 2]}));
        m.insert("search_term".into(), serde_json::Value::Null);
    })
    .expect("valid");
    assert_eq!(ev.search_term, None);
}

#[test]
fn malformed_json_and_non_objects_are_malformed() {
    for bad in [&b"{\"event_type\": "[..], b"", b"   ", b"[1,2,3]", b"\"CLICK\"", b"not json"] {
        let e = decode_ad_event(bad, &coord(), NOW).expect_err("must reject");
        assert_eq!(e.code(), "MALFORMED_JSON", "{e}");
    }
}

#[test]
fn wrong_json_types_are_bad_fields() {
    let e = ad_with(|m| {
        m.insert("actual_price".into(), serde_json::json!("1200"));
    })
    .expect_err("string price");
    assert_eq!(e.code(), "BAD_FIELD");
    let e = ad_with(|m| {
        m.insert("bid_price".into(), serde_json::json!(1500.5));
    })
    .expect_err("fractional price");
    assert_eq!(e.code(), "BAD_FIELD");
    let e = ad_with(|m| {
        m.insert("device_id".into(), serde_json::json!(12345));
    })
    .expect_err("numeric id");
    assert_eq!(e.code(), "BAD_FIELD");
}

#[test]
fn each_required_ad_field_is_reported_by_name() {
    for field in ["event_type", "timestamp", "device_id", "ad_id", "campaign_id", "advertiser_id", "placement", "category", "bid_price", "actual_price"] {
        let e = ad_with(|m| {
            m.remove(field);
        })
        .expect_err(field);
        assert_eq!(e, Invalid::MissingField { field: field_name(field) }, "{field}");
        let e = ad_with(|m| {
            m.insert(field.into(), serde_json::Value::Null);
        })
        .expect_err(field);
        assert_eq!(e.code(), "MISSING_FIELD", "null {field}");
    }
}

fn field_name(f: &str) -> &'static str {
    match f {
        "event_type" => "event_type",
        "timestamp" => "timestamp",
        "device_id" => "device_id",
        "ad_id" => "ad_id",
        "campaign_id" => "campaign_id",
        "advertiser_id" => "advertiser_id",
        "placement" => "placement",
        "category" => "category",
        "bid_price" => "bid_price",
        _ => "actual_price",
    }
}

#[test]
fn impressions_cost_nothing_and_product_id_is_optional() {
    let ev = ad_with(|m| {
        m.insert("event_type".into(), "IMPRESSION".into());
        m.remove("product_id");
    })
    .expect("impression without product");
    // SPEC §3: an impression's actual_price is "optional, ignored" — it is not kept.
    assert_eq!((ev.price(), ev.actual_price, ev.product_id), (0, None, None));
}

fn typed(event_type: &str, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Result<AdEvent, Invalid> {
    ad_with(|m| {
        m.insert("event_type".into(), event_type.into());
        f(m);
    })
}

#[test]
fn impressions_and_conversions_need_no_prices_per_the_field_table() {
    let ev = typed("IMPRESSION", |m| {
        m.remove("actual_price");
        m.remove("bid_price");
    })
    .expect("SPEC §3: an impression without prices is valid");
    assert_eq!((ev.event_type, ev.bid_price, ev.actual_price, ev.price()), (AdEventType::Impression, None, None, 0));
    let ev = typed("IMPRESSION", |m| {
        m.remove("actual_price");
    })
    .expect("impression with a bid only");
    assert_eq!(ev.bid_price, Some(1500));
    let ev = typed("CONVERSION", |m| {
        m.remove("actual_price");
        m.remove("bid_price");
        m.insert("revenue_amount".into(), 50_000.into());
        m.insert("order_id".into(), "order_789".into());
    })
    .expect("SPEC §3: a conversion without prices is valid");
    assert_eq!((ev.revenue_amount, ev.order_id.as_deref(), ev.actual_price), (Some(50_000), Some("order_789"), None));
    // Ignored means ignored: an impression's actual_price above its bid does not make it invalid.
    let ev = typed("IMPRESSION", |m| {
        m.insert("actual_price".into(), 9_999.into());
    })
    .expect("ignored actual_price");
    assert_eq!(ev.actual_price, None);
    // ... but an optional field that is present is still checked.
    let e = typed("IMPRESSION", |m| {
        m.insert("bid_price".into(), (-1).into());
    })
    .expect_err("negative bid");
    assert_eq!(e, Invalid::NegativeAmount { field: "bid_price", value: -1 });
}

#[test]
fn a_conversion_requires_revenue_and_order_and_a_click_requires_both_prices() {
    let conversion = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        typed("CONVERSION", |m| {
            m.insert("revenue_amount".into(), 50_000.into());
            m.insert("order_id".into(), "o1".into());
            f(m);
        })
    };
    conversion(&|_| {}).expect("complete conversion");
    for field in ["revenue_amount", "order_id"] {
        let e = conversion(&|m| {
            m.remove(field);
        })
        .expect_err(field);
        assert_eq!(e.code(), "MISSING_FIELD", "{field}: {e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    // A click without prices stays invalid (it is what gets charged).
    for field in ["bid_price", "actual_price"] {
        let e = typed("CLICK", |m| {
            m.remove(field);
        })
        .expect_err(field);
        assert_eq!(e, Invalid::MissingField { field: field_name(field) });
    }
}

#[test]
fn ids_are_bounded_and_printable() {
    let id_fields = ["event_id", "device_id", "session_id", "ad_id", "campaign_id", "advertiser_id", "product_id", "category"];
    for field in id_fields {
        let e = ad_with(|m| {
            m.insert(field.into(), "x".repeat(129).into());
        })
        .expect_err(field);
        assert_eq!(e.code(), "ID_TOO_LONG", "{field}: {e}");
        assert!(e.to_string().contains(field), "{e}");
        ad_with(|m| {
            m.insert(field.into(), "x".repeat(128).into());
        })
        .unwrap_or_else(|e| panic!("{field}: 128 bytes is allowed: {e}"));
        for bad in ["a\nb", "tab\there", "nul\u{0}", "del\u{7f}", "c1\u{85}"] {
            let e = ad_with(|m| {
                m.insert(field.into(), bad.into());
            })
            .expect_err(bad);
            assert_eq!(e.code(), "ID_NOT_PRINTABLE", "{field} = {bad:?}: {e}");
        }
    }
    // Printable non-ASCII is fine (the spec's categories are Korean).
    ad_with(|m| {
        m.insert("device_id".into(), "기기_é_😀".into());
    })
    .expect("printable unicode");
    // The other decoders check their ids too.
    let conv = br#"{"timestamp":"2024-01-15T10:30:00Z","device_id":"d","order_id":"o\u0001","product_id":"p","revenue_amount":1,"conversion_type":"PURCHASE"}"#;
    assert_eq!(decode_conversion_event(conv, &coord(), NOW).expect_err("order id").code(), "ID_NOT_PRINTABLE");
}

#[test]
fn the_id_limit_is_configurable() {
    let v = Validator::new(ValidationConfig { max_id_bytes: 8, ..ValidationConfig::default() });
    let mut j = click_json();
    j["device_id"] = "device_1".into();
    j["ad_id"] = "ad_1".into();
    j["campaign_id"] = "c".into();
    j["advertiser_id"] = "a".into();
    j["product_id"] = "p".into();
    j["session_id"] = "s".into();
    j["category"] = "cat".into();
    v.ad_event(j.to_string().as_bytes(), &coord(), Some(NOW)).expect("8 bytes fit");
    j["device_id"] = "device_12".into();
    let e = v.ad_event(j.to_string().as_bytes(), &coord(), Some(NOW)).expect_err("9 bytes");
    assert_eq!(e, Invalid::IdTooLong { field: "device_id", len: 9, max: 8 });
}

#[test]
fn empty_ids_are_invalid_values() {
    let e = ad_with(|m| {
        m.insert("device_id".into(), "".into());
    })
    .expect_err("empty");
    assert_eq!(e, Invalid::InvalidValue { field: "device_id", reason: "must not be empty".into() });
}

#[test]
fn unknown_enum_values_name_field_and_value() {
    let e = ad_with(|m| {
        m.insert("placement".into(), "SIDEBAR".into());
    })
    .expect_err("placement");
    assert_eq!(e, Invalid::UnknownEnum { field: "placement", value: "SIDEBAR".into() });
    let e = ad_with(|m| {
        m.insert("event_type".into(), "click".into());
    })
    .expect_err("lower-case");
    assert_eq!(e, Invalid::UnknownEnum { field: "event_type", value: "click".into() });
}

#[test]
fn bad_timestamps_carry_the_parser_reason() {
    let e = ad_with(|m| {
        m.insert("timestamp".into(), "2024-01-15T19:30:00+09:00".into());
    })
    .expect_err("offset");
    assert_eq!(
        e,
        Invalid::BadTimestamp {
            field: "timestamp",
            value: "2024-01-15T19:30:00+09:00".into(),
            reason: rfc3339::TimestampError::NonUtcOffset
        }
    );
    assert!(e.to_string().contains("not UTC"), "{e}");
}

#[test]
fn negative_absurd_and_above_bid_prices_are_rejected() {
    let e = ad_with(|m| {
        m.insert("actual_price".into(), (-1).into());
    })
    .expect_err("negative");
    assert_eq!(e, Invalid::NegativeAmount { field: "actual_price", value: -1 });
    let e = ad_with(|m| {
        m.insert("bid_price".into(), 10_000_001.into());
    })
    .expect_err("absurd");
    assert_eq!(e, Invalid::AbsurdAmount { field: "bid_price", value: 10_000_001, max: 10_000_000 });
    let e = ad_with(|m| {
        m.insert("actual_price".into(), 1501.into());
    })
    .expect_err("above bid");
    assert_eq!(e, Invalid::ActualAboveBid { actual: 1501, bid: 1500 });
    // Exactly at the bid and exactly at the maximum are fine.
    assert!(ad_with(|m| {
        m.insert("actual_price".into(), 1500.into());
    })
    .is_ok());
    let v = Validator::new(ValidationConfig { max_price: 1500, ..ValidationConfig::default() });
    assert!(v.ad_event(click_json().to_string().as_bytes(), &coord(), Some(NOW)).is_ok());
    let v = Validator::new(ValidationConfig { max_price: 1499, ..ValidationConfig::default() });
    let e = v.ad_event(click_json().to_string().as_bytes(), &coord(), Some(NOW)).expect_err("configured max");
    assert_eq!(e.code(), "ABSURD_AMOUNT");
}

#[test]
fn future_timestamps_beyond_the_allowed_lead_are_rejected() {
    let bytes = click_json().to_string();
    let v = Validator::default();
    // Exactly one hour ahead is allowed, one millisecond more is not.
    assert!(v.ad_event(bytes.as_bytes(), &coord(), Some(NOW - HOUR)).is_ok());
    let e = v.ad_event(bytes.as_bytes(), &coord(), Some(NOW - HOUR - 1)).expect_err("future");
    assert_eq!(e, Invalid::FutureTimestamp { timestamp: NOW, now: NOW - HOUR - 1, max_ahead: HOUR });
    assert!(v.ad_event(bytes.as_bytes(), &coord(), None).is_ok(), "no processing time, no check");
}

fn campaign_json() -> serde_json::Value {
    serde_json::json!({"event_type":"CAMPAIGN_UPDATED","timestamp":"2024-01-15T10:30:00Z","campaign_id":"c1","advertiser_id":"a","placement":"HOME","category":"x","bid_price":1500,"daily_budget":100000,"status":"ACTIVE","approval_status":"APPROVED"})
}

fn campaign_with(k: &str, v: Option<serde_json::Value>) -> Result<CampaignEvent, Invalid> {
    let mut j = campaign_json();
    if let serde_json::Value::Object(m) = &mut j {
        match v {
            Some(v) => m.insert(k.into(), v),
            None => m.remove(k),
        };
    }
    decode_campaign_event(j.to_string().as_bytes(), &coord(), NOW)
}

#[test]
fn campaign_events_are_full_snapshots_with_optional_extras() {
    let ev = campaign_with("effective_from", None).expect("valid");
    assert_eq!((ev.bid_price, ev.daily_budget, ev.effective_from), (1500, 100_000, None));
    for field in ["event_type", "timestamp", "campaign_id", "advertiser_id", "placement", "category", "bid_price", "daily_budget", "status", "approval_status"] {
        assert_eq!(campaign_with(field, None).map_err(|e| e.code()), Err("MISSING_FIELD"), "{field}");
    }
    assert_eq!(campaign_with("status", Some("RUNNING".into())), Err(Invalid::UnknownEnum { field: "status", value: "RUNNING".into() }));
    assert_eq!(campaign_with("effective_from", Some("tomorrow".into())).map_err(|e| e.code()), Err("BAD_TIMESTAMP"));
    assert_eq!(
        campaign_with("daily_budget", Some(10_000_001.into())),
        Err(Invalid::AbsurdAmount { field: "daily_budget", value: 10_000_001, max: 10_000_000 })
    );
    assert_eq!(campaign_with("status_reason", Some("BUDGET_EXHAUSTED".into())).map(|e| e.status_reason), Ok(Some(StatusReason::BudgetExhausted)));
}

#[test]
fn conversion_rules() {
    let c = coord();
    let ok = br#"{"timestamp":"2024-01-15T14:30:00Z","device_id":"device_12345","session_id":"s","order_id":"order_789","product_id":"product_200","revenue_amount":50000,"conversion_type":"PURCHASE","attribution_window":24,"referrer_url":"https://example.com/product/200"}"#;
    let ev = decode_conversion_event(ok, &c, NOW + 4 * HOUR).expect("spec example");
    assert_eq!((ev.revenue_amount, ev.attribution_window), (50_000, Some(24)));
    let neg = br#"{"timestamp":"2024-01-15T14:30:00Z","device_id":"d","order_id":"o","product_id":"p","revenue_amount":5,"conversion_type":"PURCHASE","attribution_window":-1}"#;
    assert_eq!(decode_conversion_event(neg, &c, NOW + 4 * HOUR).map_err(|e| e.code()), Err("INVALID_VALUE"));
    let no_rev = br#"{"timestamp":"2024-01-15T14:30:00Z","device_id":"d","order_id":"o","product_id":"p","conversion_type":"PURCHASE"}"#;
    assert_eq!(decode_conversion_event(no_rev, &c, NOW + 4 * HOUR), Err(Invalid::MissingField { field: "revenue_amount" }));
}

#[test]
fn compensation_consistency_rules() {
    let c = coord();
    let base = serde_json::json!({"timestamp":"2024-01-15T10:35:00Z","advertiser_id":"advertiser_50","campaign_id":"campaign_100","ad_id":"ad_001","device_id":"device_12345","duplicate_click_count":3,"refund_amount":2400,"original_click_timestamps":["2024-01-15T10:30:15Z","2024-01-15T10:30:18Z","2024-01-15T10:30:22Z"],"detection_window":"5_MINUTES","reason":"DUPLICATE_CLICK_DETECTED","compensation_type":"BALANCE_REFUND"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        decode_compensation_event(b.to_string().as_bytes(), &c, NOW)
    };
    let ev = decode_compensation_event(base.to_string().as_bytes(), &c, NOW).expect("spec example");
    assert_eq!((ev.duplicate_click_count, ev.refund_amount, ev.window_start()), (3, 2400, NOW + 15_000));
    assert_eq!(with("duplicate_click_count", 2.into()).map_err(|e| e.code()), Err("INVALID_VALUE"));
    assert_eq!(
        with("original_click_timestamps", serde_json::json!(["2024-01-15T10:30:18Z", "2024-01-15T10:30:15Z", "2024-01-15T10:30:22Z"]))
            .map_err(|e| e.code()),
        Err("INVALID_VALUE")
    );
    assert_eq!(with("original_click_timestamps", serde_json::json!(["2024-01-15T10:30:15Z"])).map_err(|e| e.code()), Err("INVALID_VALUE"));
    assert_eq!(
        with("detection_window", "10_MINUTES".into()),
        Err(Invalid::UnknownEnum { field: "detection_window", value: "10_MINUTES".into() })
    );
    assert_eq!(with("refund_amount", (-5).into()), Err(Invalid::NegativeAmount { field: "refund_amount", value: -5 }));
}

#[test]
fn dead_letter_keeps_reason_source_and_payload() {
    let payload = b"{oops";
    let e = decode_ad_event(payload, &coord(), NOW).expect_err("malformed");
    let dl = e.into_dead_letter(coord(), "decode:ad-events", payload);
    assert_eq!(dl.source, coord());
    assert!(dl.reason.starts_with("MALFORMED_JSON: "), "{}", dl.reason);
    assert_eq!(dl.payload, "{oops");
}
