use super::*;
use crate::file::{decode_any_model_file, decode_file, encode_file, AnyModel};
use crate::recommend::data::{encode, Purchase};

/// 2011-01-01.
const DAY0: i32 = 14_975;

fn items() -> Vec<String> {
    ["x1", "x2", "x3", "y1", "y2", "y3", "z"].map(String::from).to_vec()
}

fn spec_with(scoring: Scoring) -> RecommendSpec {
    RecommendSpec::new(items(), vec![], DAY0, 30, scoring).unwrap()
}

fn spec() -> RecommendSpec {
    spec_with(Scoring { popularity: 0.1, content: 0.0, cooccurrence: 1.0, ..Scoring::default() })
}

fn date(day: i32) -> String {
    format!("{}T10:00:00", day_string(day))
}

/// Two tastes: customers who buy x's and customers who buy y's; everyone buys z.
fn purchases(prefix: &str, n: usize) -> Vec<Purchase> {
    let mut out = Vec::new();
    for c in 0..n {
        let taste = if c % 2 == 0 { "x" } else { "y" };
        for (j, item) in [format!("{taste}1"), format!("{taste}2"), format!("{taste}3"), "z".into()]
            .into_iter()
            .enumerate()
        {
            // Every customer misses one of their taste's items, so the items co-occur without all
            // customers being identical.
            if j == c % 3 {
                continue;
            }
            out.push(Purchase {
                customer: format!("{prefix}{c}"),
                item,
                invoice: format!("{prefix}{c}-{j}"),
                date: date(DAY0 + (c % 20) as i32),
                country: prefix.into(),
                line: out.len(),
            });
        }
    }
    out
}

fn trained(s: &RecommendSpec, ps: &[Purchase]) -> RecommendModel {
    RecommendModel::counted(s.clone(), &encode(s, ps)).unwrap()
}

fn names(r: &Recommendations) -> Vec<&str> {
    r.items.iter().map(|i| i.item.as_str()).collect()
}

fn seen(items: &[&str]) -> Vec<Seen> {
    items.iter().map(|i| Seen::now(*i)).collect()
}

#[test]
fn co_purchases_find_the_two_tastes() {
    let m = trained(&spec(), &purchases("a", 40));
    let r = m.recommend_at(&seen(&["x1", "x3"]), DAY0 + 30, 2).unwrap();
    assert!(!r.cold_start);
    // z, bought by everyone, co-occurs with everything; x2 comes before every y.
    assert_eq!(names(&r), ["z", "x2"], "{r:?}");
    assert!(!names(&r).contains(&"x1") && !names(&r).contains(&"x3"), "history is never recommended");
    let r = m.recommend_at(&seen(&["y2", "y3", "y3"]), DAY0 + 30, 2).unwrap();
    assert_eq!(names(&r), ["z", "y1"], "{r:?}");
}

#[test]
fn the_customer_weighted_average_of_institutions_is_the_pooled_statistics() {
    // The property the design rests on: each institution's shares weighted by its customers average to
    // the pooled shares, which is what the coordinator computes.
    let s = spec();
    let (a, b) = (purchases("a", 30), purchases("b", 11));
    let pooled: Vec<Purchase> = a.iter().chain(&b).cloned().collect();
    let want = trained(&s, &pooled).params;
    let mut sum = vec![0.0f64; s.num_params()];
    let mut total = 0;
    for shard in [&a, &b] {
        let mut p = vec![0.0; s.num_params()];
        let n = train_local(&s, &mut p, &encode(&s, shard), &default_train_params()).unwrap().examples;
        sum.iter_mut().zip(&p).for_each(|(acc, v)| *acc += n as f64 * f64::from(*v));
        total += n;
    }
    assert_eq!(total, 41);
    for (w, g) in want.iter().zip(&sum) {
        assert!((f64::from(*w) - g / total as f64).abs() < 1e-6, "{w} vs {}", g / total as f64);
    }
    // z: bought by all 41 customers, on days 0..19 of the window.
    let z = 6 * 30;
    let buyers: f32 = want[z..z + 30].iter().sum();
    assert!((buyers * 41.0 - 41.0).abs() < 1e-4, "{buyers}");
}

#[test]
fn popularity_counts_only_the_recent_days_before_now() {
    let s = spec_with(Scoring {
        recent_days: 5,
        popularity: 1.0,
        content: 0.0,
        cooccurrence: 0.0,
        ..Scoring::default()
    });
    let p = |c: &str, item: &str, day: i32| Purchase {
        customer: c.into(),
        item: item.into(),
        invoice: format!("{c}{day}"),
        date: date(DAY0 + day),
        country: "UK".into(),
        line: 0,
    };
    // x1 sold on days 0-2 (three buyers), y1 on day 10 (two), z on day 12 (five).
    let mut ps = vec![p("a", "x1", 0), p("b", "x1", 1), p("c", "x1", 2), p("d", "y1", 10), p("e", "y1", 10)];
    ps.extend((0..5).map(|i| p(&format!("f{i}"), "z", 12)));
    ps.push(p("g", "x2", 3));
    let m = trained(&s, &ps);
    let top = |now: i32| names(&m.recommend_at(&seen(&["x2"]), DAY0 + now, 1).unwrap())[0].to_string();
    assert_eq!(top(3), "x1", "days 0-2 are within the 5 before day 3");
    assert_eq!(top(11), "y1", "x1 is too old by day 11 and z not sold yet");
    assert_eq!(top(12), "y1", "sales on the day itself do not count");
    assert_eq!(top(13), "z");
    assert_eq!(top(40), "x1", "beyond the window, the items of its last days, none here: ties go low");
}

#[test]
fn descriptions_make_a_product_line() {
    let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let descriptions: Vec<String> =
        ["LUNCH BAG RED RETROSPOT", "LUNCH BAG SPACEBOY", "JUMBO BAG PINK", "CERAMIC MUG"]
            .map(String::from)
            .to_vec();
    let only_content = Scoring { popularity: 0.0, content: 1.0, cooccurrence: 0.0, ..Scoring::default() };
    let s = RecommendSpec::new(items, descriptions, DAY0, 10, only_content).unwrap();
    let m = RecommendModel::initial(s);
    let r = m.recommend_at(&seen(&["a"]), DAY0, 3).unwrap();
    assert_eq!(names(&r)[..2], ["b", "c"], "lunch bags first, then other bags: {r:?}");
    // Recency: of two history items, the newer one's neighbours come first.
    let h = vec![Seen { item: "a".into(), day: Some(DAY0 - 60) }, Seen { item: "d".into(), day: Some(DAY0) }];
    assert_eq!(
        m.scores(&only_content, &[(0, DAY0 - 60), (3, DAY0)], DAY0)[3],
        0.0,
        "an item is not its own neighbour"
    );
    assert!(m.recommend_at(&h, DAY0, 1).unwrap().items[0].item == "b");
}

#[test]
fn cold_starts_get_the_institutions_popular_items() {
    let s = spec();
    let data = encode(&s, &purchases("a", 10));
    let mut m = RecommendModel::initial(s.clone());
    let r = m.recommend(&[], 3).unwrap();
    assert!(r.cold_start && r.items.is_empty(), "no popularity known yet: nothing to offer");
    m.calibration.popular = popular_items(&s, &data, 3);
    assert_eq!(m.calibration.popular[0], PopularItem { item: "z".into(), buyers: 10 });
    let r = m.recommend(&[], 2).unwrap();
    assert!(r.cold_start);
    assert_eq!(names(&r), ["z", "x2"]);
}

#[test]
fn hostile_requests_are_errors() {
    let m = RecommendModel::initial(spec());
    assert_eq!(m.recommend(&seen(&["x1", "nope"]), 3).unwrap_err(), ModelError::UnknownItem("nope".into()));
    for k in [0, MAX_TOP_K + 1] {
        assert!(m.recommend(&seen(&["x1"]), k).unwrap_err().to_string().contains("top_k"));
    }
    let long = seen(&vec!["x1"; MAX_HISTORY + 1]);
    assert!(m.recommend(&long, 3).unwrap_err().to_string().contains("limit"));
    let data = encode(&spec(), &purchases("a", 4));
    assert_eq!(data.history(&spec(), "who").unwrap_err(), ModelError::UnknownCustomer("who".into()));
    assert!(m.recommend(&seen(&[" x1 "]), 3).is_ok(), "ids are trimmed");
    // Days far outside any window are clamped, not an overflow.
    let far = vec![Seen { item: "x1".into(), day: Some(i32::MIN) }];
    assert!(m.recommend_at(&far, i32::MAX, 3).is_ok());
}

#[test]
fn specs_and_parameters_are_validated() {
    let bad = |items: Vec<&str>, names: Vec<&str>, days: u32, sc: Scoring| {
        RecommendSpec::new(
            items.into_iter().map(String::from).collect(),
            names.into_iter().map(String::from).collect(),
            DAY0,
            days,
            sc,
        )
        .unwrap_err()
        .to_string()
    };
    let d = Scoring::default();
    assert!(bad(vec!["a"], vec![], 5, d).contains("1 items"));
    assert!(bad(vec!["a", "a"], vec![], 5, d).contains("twice"));
    assert!(bad(vec!["a", ""], vec![], 5, d).contains("1 to 64 bytes"));
    assert!(bad(vec!["a", "b\n"], vec![], 5, d).contains("control"));
    assert!(bad(vec!["a", "b"], vec!["x"], 5, d).contains("1 names for 2 items"));
    assert!(bad(vec!["a", "b"], vec!["x", "y\u{7}"], 5, d).contains("control"));
    assert!(bad(vec!["a", "b"], vec![], 0, d).contains("days 0"));
    assert!(bad(vec!["a", "b"], vec![], MAX_DAYS + 1, d).contains("days"));
    assert!(bad(vec!["a", "b"], vec![], 5, Scoring { recent_days: 0, ..d }).contains("recent_days"));
    assert!(bad(vec!["a", "b"], vec![], 5, Scoring { half_life_days: f64::NAN, ..d }).contains("half_life"));
    assert!(bad(vec!["a", "b"], vec![], 5, Scoring { content: -1.0, ..d }).contains("content"));
    let none = Scoring { popularity: 0.0, content: 0.0, cooccurrence: 0.0, ..d };
    assert!(bad(vec!["a", "b"], vec![], 5, none).contains("positive"));
    let s = spec();
    assert_eq!(RecommendSpec::from_json(&s.to_json()).unwrap(), s);
    assert!(String::from_utf8(s.to_json()).unwrap().contains(r#""first_day":"2011-01-01""#));
    assert!(matches!(
        RecommendSpec::from_json(br#"{"family": "emotion", "items": ["a", "b"], "first_day": "2011-01-01", "days": 3, "scoring": {"recent_days": 1, "half_life_days": 1, "popularity": 1, "content": 0, "cooccurrence": 0}}"#),
        Err(ModelError::WrongFamily { .. })
    ));
    let e = RecommendSpec::from_json(br#"{"family": "recommend", "items": ["a", "b"], "first_day": "2011-13-01", "days": 3, "scoring": {"recent_days": 1, "half_life_days": 1, "popularity": 1, "content": 0, "cooccurrence": 0}}"#).unwrap_err();
    assert!(e.to_string().contains("first_day"), "{e}");
    assert!(RecommendSpec::from_json(br#"{"family": "recommend", "items": ["a", "b"]}"#).is_err());
    let mut p = vec![0.0; s.num_params()];
    p[3] = f32::NAN;
    assert!(RecommendModel::from_params(s.clone(), p).unwrap_err().to_string().contains("parameter 3"));
    assert!(RecommendModel::from_params(s, vec![0.0; 5]).is_err());
}

#[test]
fn large_catalogues_share_pair_slots() {
    let s = spec();
    assert_eq!(s.pair_slots(), 21);
    let mut slots: Vec<usize> =
        (0..7u32).flat_map(|a| (0..a).map(move |b| (a, b))).map(|(a, b)| s.pair_slot(a, b)).collect();
    slots.sort_unstable();
    assert_eq!(slots, (0..21).collect::<Vec<_>>(), "a small catalogue gives each pair its own slot");
    assert_eq!(s.pair_slot(2, 5), s.pair_slot(5, 2));
    let big = RecommendSpec::with_defaults((0..3000).map(|i| format!("{i:05}")).collect(), vec![], DAY0, 1)
        .unwrap();
    assert_eq!(big.pair_slots(), MAX_PAIR_SLOTS);
    assert_eq!(big.num_params(), 3000 + MAX_PAIR_SLOTS);
    for (a, b) in [(0, 1), (2998, 2999), (1500, 7)] {
        assert!(big.pair_slot(a, b) < MAX_PAIR_SLOTS);
        assert_eq!(big.pair_slot(a, b), big.pair_slot(b, a));
    }
}

#[test]
fn files_carry_the_popular_items_and_refuse_unknown_ones() {
    let s = spec();
    let data = encode(&s, &purchases("a", 10));
    let mut m = trained(&s, &purchases("a", 10));
    m.calibration.popular = popular_items(&s, &data, 5);
    let bytes = encode_file(&m, &serde_json::Value::Null);
    let (back, _) = decode_file::<RecommendModel>(&bytes, 1 << 30).unwrap();
    assert_eq!(back, m);
    assert!(matches!(decode_any_model_file(&bytes, 1 << 30).unwrap().0, AnyModel::Recommend(_)));
    m.calibration.popular.push(PopularItem { item: "ghost".into(), buyers: 1 });
    let e = decode_file::<RecommendModel>(&encode_file(&m, &serde_json::Value::Null), 1 << 30).unwrap_err();
    assert!(e.to_string().contains("\"ghost\""), "{e}");
}

#[test]
fn day_numbers_round_trip() {
    assert_eq!(day_number("1970-01-01"), Some(0));
    assert_eq!(day_number("2011-01-01T10:00:00"), Some(DAY0));
    assert_eq!(day_number("2000-02-29"), Some(11_016));
    assert_eq!(day_number("2011-02-30x"), day_number("2011-03-02"), "days past the month's end roll over");
    for d in [0, 11_016, DAY0, 20_000, 2_932_896] {
        assert_eq!(day_number(&day_string(d)), Some(d));
    }
    assert_eq!(day_number("2011-13-01"), None);
    assert_eq!(day_number("nope"), None);
}
