use super::*;
use crate::file::{decode_any_model_file, decode_file, encode_file, AnyModel};
use crate::recommend::data::{encode, Purchase};

fn items() -> Vec<String> {
    ["x1", "x2", "x3", "y1", "y2", "y3", "z"].map(String::from).to_vec()
}

fn spec() -> RecommendSpec {
    RecommendSpec::new(items(), 4, 10.0, 1.0, 7).unwrap()
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
                date: "2011-01-01T10:00:00".into(),
                country: prefix.into(),
                line: out.len(),
            });
        }
    }
    out
}

fn tp() -> TrainParams {
    TrainParams { local_epochs: 50, learning_rate: 0.5, batch_size: 1000, l2: 0.01, seed: 1 }
}

#[test]
fn both_trainers_learn_the_two_tastes() {
    let s = spec();
    let data = encode(&s, &purchases("a", 40));
    for als in [false, true] {
        let mut p = vec![0.0; s.num_params()];
        let stats = if als {
            train_als(&s, &mut p, &data, &TrainParams { local_epochs: 5, ..tp() })
        } else {
            train_local(&s, &mut p, &data, &TrainParams { local_epochs: 300, learning_rate: 2.0, ..tp() })
        }
        .unwrap();
        assert_eq!(stats.examples, 40);
        let m = RecommendModel::from_params(s.clone(), p).unwrap();
        let r = m.recommend(&["x1", "x3"], 2).unwrap();
        let got: Vec<&str> = r.items.iter().map(|i| i.item.as_str()).collect();
        assert!(!r.cold_start);
        assert!(got.contains(&"x2"), "als {als}: {got:?}");
        assert!(!got.contains(&"x1") && !got.contains(&"x3"), "history is never recommended");
        let r = m.recommend(&["y2", "y3", "y3"], 2).unwrap();
        let got: Vec<&str> = r.items.iter().map(|i| i.item.as_str()).collect();
        assert!(got.contains(&"y1"), "als {als}: {got:?}");
    }
}

#[test]
fn one_full_batch_step_averaged_over_institutions_is_the_pooled_step() {
    // The property the design rests on: the loss is a mean over an institution's customers and the
    // update is weighted by that count, so federated averaging of one step is the pooled gradient step.
    let s = spec();
    let (a, b) = (purchases("a", 30), purchases("b", 11));
    let one = TrainParams { local_epochs: 1, ..tp() };
    let pooled: Vec<Purchase> = a.iter().chain(&b).cloned().collect();
    let mut want = vec![0.0; s.num_params()];
    train_local(&s, &mut want, &encode(&s, &pooled), &one).unwrap();
    let mut sum = vec![0.0f64; s.num_params()];
    let mut total = 0;
    for shard in [&a, &b] {
        let mut p = vec![0.0; s.num_params()];
        let n = train_local(&s, &mut p, &encode(&s, shard), &one).unwrap().examples;
        sum.iter_mut().zip(&p).for_each(|(acc, v)| *acc += n as f64 * f64::from(*v));
        total += n;
    }
    for (w, g) in want.iter().zip(&sum) {
        assert!((f64::from(*w) - g / total as f64).abs() < 1e-5, "{w} vs {}", g / total as f64);
    }
}

#[test]
fn zero_parameters_are_the_seeded_start() {
    let s = spec();
    let m = RecommendModel::initial(s.clone());
    assert!(m.params.iter().all(|p| *p == 0.0));
    assert!(m.factors.iter().any(|f| *f != 0.0), "the factors start away from the saddle at zero");
    assert_eq!(RecommendModel::initial(s).factors, m.factors, "every party derives the same start");
}

#[test]
fn cold_starts_get_the_institutions_popular_items() {
    let s = spec();
    let data = encode(&s, &purchases("a", 10));
    let mut m = RecommendModel::initial(s.clone());
    let none: [&str; 0] = [];
    let r = m.recommend(&none, 3).unwrap();
    assert!(r.cold_start && r.items.is_empty(), "no popularity known yet: nothing to offer");
    m.calibration.popular = popular_items(&s, &data, 3);
    assert_eq!(m.calibration.popular[0], PopularItem { item: "z".into(), buyers: 10 });
    let r = m.recommend(&none, 2).unwrap();
    assert!(r.cold_start);
    assert_eq!(r.items.iter().map(|i| i.item.as_str()).collect::<Vec<_>>(), ["z", "x2"]);
}

#[test]
fn hostile_requests_are_errors() {
    let m = RecommendModel::initial(spec());
    assert_eq!(m.recommend(&["x1", "nope"], 3).unwrap_err(), ModelError::UnknownItem("nope".into()));
    for k in [0, MAX_TOP_K + 1] {
        assert!(m.recommend(&["x1"], k).unwrap_err().to_string().contains("top_k"));
    }
    let long = vec!["x1"; MAX_HISTORY + 1];
    assert!(m.recommend(&long, 3).unwrap_err().to_string().contains("limit"));
    let data = encode(&spec(), &purchases("a", 4));
    assert_eq!(data.history(&spec(), "who").unwrap_err(), ModelError::UnknownCustomer("who".into()));
    assert!(m.recommend(&[" x1 "], 3).is_ok(), "ids are trimmed");
}

#[test]
fn specs_and_parameters_are_validated() {
    let bad = |items: Vec<&str>, f: u16, a: f32, l: f32| {
        RecommendSpec::new(items.into_iter().map(String::from).collect(), f, a, l, 1).unwrap_err().to_string()
    };
    assert!(bad(vec!["a"], 4, 1.0, 1.0).contains("1 items"));
    assert!(bad(vec!["a", "a"], 4, 1.0, 1.0).contains("twice"));
    assert!(bad(vec!["a", ""], 4, 1.0, 1.0).contains("1 to 64 bytes"));
    assert!(bad(vec!["a", "b\n"], 4, 1.0, 1.0).contains("control"));
    assert!(bad(vec!["a", "b"], 0, 1.0, 1.0).contains("factors"));
    assert!(bad(vec!["a", "b"], 4, f32::NAN, 1.0).contains("alpha"));
    assert!(bad(vec!["a", "b"], 4, 1.0, 0.0).contains("user_l2"));
    let s = spec();
    assert_eq!(RecommendSpec::from_json(&s.to_json()).unwrap(), s);
    assert!(matches!(
        RecommendSpec::from_json(br#"{"family": "emotion", "items": ["a", "b"], "factors": 2, "alpha": 1, "user_l2": 1, "seed": 1}"#),
        Err(ModelError::WrongFamily { .. })
    ));
    assert!(RecommendSpec::from_json(br#"{"family": "recommend", "items": ["a", "b"]}"#).is_err());
    let mut p = vec![0.0; s.num_params()];
    p[3] = f32::NAN;
    assert!(RecommendModel::from_params(s.clone(), p).unwrap_err().to_string().contains("parameter 3"));
    assert!(RecommendModel::from_params(s, vec![0.0; 5]).is_err());
}

#[test]
fn divergent_training_is_an_error_not_a_nan_model() {
    let s = spec();
    let data = encode(&s, &purchases("a", 40));
    // Parameters at the edge of f32: the first step overflows.
    let mut p = vec![f32::MAX / 2.0; s.num_params()];
    let e = train_local(&s, &mut p, &data, &tp()).unwrap_err();
    assert!(e.to_string().contains("diverged") || e.to_string().contains("positive definite"), "{e}");
}

#[test]
fn files_carry_the_popular_items_and_refuse_unknown_ones() {
    let s = spec();
    let data = encode(&s, &purchases("a", 10));
    let mut m = RecommendModel::initial(s.clone());
    m.calibration.popular = popular_items(&s, &data, 5);
    let bytes = encode_file(&m, &serde_json::Value::Null);
    let (back, _) = decode_file::<RecommendModel>(&bytes, 1 << 30).unwrap();
    assert_eq!(back, m);
    assert!(matches!(decode_any_model_file(&bytes, 1 << 30).unwrap().0, AnyModel::Recommend(_)));
    m.calibration.popular.push(PopularItem { item: "ghost".into(), buyers: 1 });
    let e = decode_file::<RecommendModel>(&encode_file(&m, &serde_json::Value::Null), 1 << 30).unwrap_err();
    assert!(e.to_string().contains("\"ghost\""), "{e}");
}
