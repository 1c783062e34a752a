use super::*;
use crate::emotion::eval::{calibrate_escalation, calibrate_thresholds, evaluate_emotion};
use crate::file::{decode_any_model_file, decode_file, encode_file, AnyModel, FileError};

fn spec() -> EmotionSpec {
    let labels = ["anger", "joy", "neutral"].map(String::from).to_vec();
    EmotionSpec::new(labels, FeatureConfig { dim: 1024, ..Default::default() }).unwrap()
}

fn ex(text: &str, labels: &[&str]) -> EmotionExample {
    EmotionExample {
        text: text.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        embedding: None,
    }
}

fn toy() -> Vec<EmotionExample> {
    vec![
        ex("this is outrageous, I am furious", &["anger"]),
        ex("worst service ever, I am so angry", &["anger"]),
        ex("你们太过分了 我很生气", &["anger"]),
        ex("thank you so much, I love it", &["joy"]),
        ex("great news, I am so happy", &["joy"]),
        ex("太好了 非常感谢", &["joy"]),
        ex("I am furious but also happy it is over", &["anger", "joy"]),
        ex("my order number is 1234", &["neutral"]),
        ex("the parcel arrives on tuesday", &["neutral"]),
        ex("请问快递什么时候到", &["neutral"]),
    ]
}

fn trained() -> EmotionModel {
    let s = spec();
    let enc = encode(&s, &toy()).unwrap();
    let mut p = vec![0.0; s.num_params()];
    let tp = TrainParams { local_epochs: 60, learning_rate: 1.0, batch_size: 2, ..Default::default() };
    let before = mean_loss(&s, &p, &enc);
    train_local(&s, &mut p, &enc, &tp).unwrap();
    assert!(mean_loss(&s, &p, &enc) < before / 4.0);
    EmotionModel::from_params(s, p).unwrap()
}

#[test]
fn training_fits_multi_label_english_and_chinese() {
    let m = trained();
    let p = m.predict("I am so angry and furious").unwrap();
    assert_eq!(p.label, "anger");
    assert!(!p.escalate, "no escalation rule, no escalation");
    assert_eq!(m.predict("太好了 谢谢").unwrap().label, "joy");
    let both = m.predict("furious but happy").unwrap();
    assert!(
        both.labels.contains(&"anger".to_string()) && both.labels.contains(&"joy".to_string()),
        "{both:?}"
    );
    assert_eq!(both.scores.len(), 3);
}

#[test]
fn calibration_sets_thresholds_and_the_escalation_rule() {
    let mut m = trained();
    let dev = toy();
    calibrate_thresholds(&mut m, &dev).unwrap();
    assert!(m.calibration.thresholds.iter().all(|t| (0.0..=1.0).contains(t)));
    let e = calibrate_escalation(&mut m, &dev, ANGER, 0.5).unwrap();
    assert_eq!(e.label, "anger");
    // Four anger texts: the 95% bound of 4/4 is about 0.6, so every one of them must be caught.
    assert_eq!(e.calibration_recall, 1.0);
    let p = m.predict("I am furious").unwrap();
    assert!(p.escalate);
    assert_eq!(p.escalation.as_ref().map(|e| e.threshold), Some(e.threshold));
    let metrics = evaluate_emotion(&m, &dev).unwrap();
    assert_eq!(metrics.escalation.as_ref().map(|s| s.score.recall), Some(1.0));
    assert!(metrics.macro_f1 > 0.9, "{metrics:?}");
    assert_eq!(metrics.class("joy").map(|c| c.support), Some(4));
}

#[test]
fn calibration_refuses_bad_policy_numbers_and_data() {
    let mut m = trained();
    let dev = toy();
    for bad in [0.0, -0.1, 1.5, f32::NAN] {
        let e = calibrate_escalation(&mut m, &dev, ANGER, bad).unwrap_err();
        assert!(e.to_string().contains("target recall"), "{e}");
    }
    let e = calibrate_escalation(&mut m, &dev, "rage", 0.7).unwrap_err();
    assert_eq!(e, ModelError::UnknownLabel("rage".into()));
    let no_anger: Vec<EmotionExample> =
        dev.into_iter().filter(|e| !e.labels.contains(&"anger".into())).collect();
    let e = calibrate_escalation(&mut m, &no_anger, ANGER, 0.7).unwrap_err();
    assert!(e.to_string().contains("no calibration text carries the label \"anger\""), "{e}");
}

#[test]
fn hostile_requests_are_errors() {
    let m = trained();
    for bad in ["", "   \n "] {
        assert!(m.predict(bad).unwrap_err().to_string().contains("empty text"));
    }
    let huge = "angry ".repeat(crate::data::MAX_TEXT_CHARS);
    assert!(m.predict(&huge).unwrap_err().to_string().contains("limit"));
    let s = spec();
    assert_eq!(encode(&s, &[ex("hi", &["rage"])]).unwrap_err(), ModelError::UnknownLabel("rage".into()));
    assert!(encode(&s, &[ex("hi", &[])]).unwrap_err().to_string().contains("no label"));
    assert!(EmotionModel::from_params(s.clone(), vec![0.0; 3]).is_err());
    let mut p = vec![0.0; s.num_params()];
    p[5] = f32::INFINITY;
    assert!(EmotionModel::from_params(s, p).unwrap_err().to_string().contains("parameter 5"));
}

#[test]
fn specs_round_trip_and_are_validated() {
    let s = spec();
    assert_eq!(EmotionSpec::from_json(&s.to_json()).unwrap(), s);
    assert_eq!(s.num_params(), 1024 * 3 + 3);
    let intent_like = br#"{"family": "intent", "labels": ["a", "b"], "features": {"dim": 1024, "word_ngrams": 1, "char_ngram_min": 0, "char_ngram_max": 0}}"#;
    assert!(matches!(EmotionSpec::from_json(intent_like), Err(ModelError::WrongFamily { .. })));
    let many: Vec<String> = (0..65).map(|i| format!("l{i}")).collect();
    assert!(EmotionSpec::new(many, FeatureConfig::default()).is_err());
    assert!(EmotionSpec::from_json(&vec![b' '; 2 << 20]).is_err());
}

#[test]
fn files_carry_the_calibration_and_refuse_a_bad_one() {
    let mut m = trained();
    calibrate_thresholds(&mut m, &toy()).unwrap();
    calibrate_escalation(&mut m, &toy(), ANGER, 0.7).unwrap();
    let bytes = encode_file(&m, &serde_json::json!({"job_id": "e1"}));
    let (back, meta) = decode_file::<EmotionModel>(&bytes, 1 << 30).unwrap();
    assert_eq!(back, m);
    assert_eq!(meta["job_id"], "e1");
    assert!(matches!(decode_any_model_file(&bytes, 1 << 30).unwrap().0, AnyModel::Emotion(_)));
    assert!(matches!(
        crate::decode_model_file(&bytes, 1 << 30),
        Err(FileError::Family { expected: "intent", .. })
    ));
    let mut bad = m.clone();
    if let Some(e) = bad.calibration.escalation.as_mut() {
        e.label = "rage".into();
    }
    let e = decode_file::<EmotionModel>(&encode_file(&bad, &serde_json::Value::Null), 1 << 30).unwrap_err();
    assert!(e.to_string().contains("escalation label \"rage\""), "{e}");
    let mut bad = m;
    bad.calibration.thresholds.pop();
    assert!(decode_file::<EmotionModel>(&encode_file(&bad, &serde_json::Value::Null), 1 << 30).is_err());
}

/// A unit vector along axis `k` of the embedding space.
fn axis(k: usize) -> Arc<[f32]> {
    let mut v = vec![0.0f32; crate::encoder::EMBEDDING_DIM];
    v[k] = 1.0;
    Arc::from(v)
}

#[test]
fn the_encoder_tier_reads_the_embedding_in_training_prediction_and_evaluation() {
    let labels = ["anger", "joy", "neutral"].map(String::from).to_vec();
    let mut s = EmotionSpec::encoder_tier(labels).unwrap();
    s.features.dim = 1024;
    assert_eq!(s.num_params(), (1024 + crate::encoder::EMBEDDING_DIM) * 3 + 3);
    assert_eq!(EmotionSpec::from_json(&s.to_json()).unwrap(), s);
    // The same words for every label: only the embedding tells them apart.
    let with =
        |label: &str, k: usize| EmotionExample { embedding: Some(axis(k)), ..ex("same words", &[label]) };
    let data: Vec<EmotionExample> =
        (0..4).flat_map(|_| [with("anger", 0), with("joy", 1), with("neutral", 2)]).collect();
    let bare: Vec<EmotionExample> =
        data.iter().map(|e| EmotionExample { embedding: None, ..e.clone() }).collect();
    let e = encode(&s, &bare).unwrap_err();
    assert!(e.to_string().contains("none was given"), "{e}");
    let mut p = vec![0.0; s.num_params()];
    let tp = TrainParams { local_epochs: 60, learning_rate: 1.0, batch_size: 2, ..Default::default() };
    train_local(&s, &mut p, &encode(&s, &data).unwrap(), &tp).unwrap();
    let mut m = EmotionModel::from_params(s, p).unwrap();
    calibrate_thresholds(&mut m, &data).unwrap();
    let e = calibrate_escalation(&mut m, &data, ANGER, 0.5).unwrap();
    assert_eq!(e.calibration_precision, 1.0, "the escalation threshold is calibrated on the embeddings");
    assert_eq!(evaluate_emotion(&m, &data).unwrap().macro_f1, 1.0);
    // Without their embeddings the examples are read by their n-grams alone, which say nothing.
    assert!(evaluate_emotion(&m, &bare).unwrap().macro_f1 < 0.6);
    let anger = m.predict_embedded("same words", Some(&axis(0))).unwrap();
    assert_eq!((anger.label.as_str(), anger.escalate), ("anger", true));
    assert_eq!(m.predict_embedded("same words", Some(&axis(1))).unwrap().label, "joy");
    let e = m.probabilities_embedded("same words", None).unwrap_err();
    assert!(e.to_string().contains("none was given"), "{e}");
    let e = m.predict_embedded("same words", Some(&[0.5; 3])).unwrap_err();
    assert!(e.to_string().contains("an embedding of 3 values"), "{e}");
    assert!(m.predict_embedded("", Some(&axis(0))).is_err());
}

#[test]
fn the_fast_tier_ignores_an_embedding_and_none_is_serialised() {
    let m = trained();
    let a = m.predict("I am so angry and furious").unwrap();
    assert_eq!(m.predict_embedded("I am so angry and furious", Some(&axis(0))).unwrap(), a);
    assert_eq!(
        m.probabilities_embedded("I am so angry and furious", None).unwrap(),
        m.probabilities("I am so angry and furious")
    );
    let e = EmotionExample { embedding: Some(axis(0)), ..ex("grr", &["anger"]) };
    let json = serde_json::to_string(&e).unwrap();
    assert!(!json.contains("embedding"), "{json}");
    let back: EmotionExample = serde_json::from_str(&json).unwrap();
    assert_eq!(back, EmotionExample { embedding: None, ..e });
}

#[test]
fn an_encoder_tier_spec_gets_the_encoder_tier_defaults() {
    use crate::spec::ModelSpec;
    let labels = ["anger", "joy"].map(String::from).to_vec();
    let tier = ModelSpec::Emotion(EmotionSpec::encoder_tier(labels.clone()).unwrap()).defaults();
    assert_eq!(tier.train.learning_rate, encoder_tier::LEARNING_RATE);
    assert_eq!(tier.train.local_epochs, encoder_tier::LOCAL_EPOCHS);
    assert_eq!(tier.server_learning_rate, encoder_tier::SERVER_LEARNING_RATE);
    assert_eq!(tier.server_momentum, encoder_tier::SERVER_MOMENTUM);
    let fast = ModelSpec::Emotion(EmotionSpec::new(labels, FeatureConfig::default()).unwrap()).defaults();
    assert_eq!(fast.train, default_train_params());
    assert_eq!((fast.server_learning_rate, fast.server_momentum), (SERVER_LEARNING_RATE, SERVER_MOMENTUM));
}
