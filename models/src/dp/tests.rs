use hearth_secagg::{os_rng, Quantizer, QuantizerSpec};

use hearth_policies::Charge;

use super::*;

fn params() -> DpParams {
    DpParams {
        clip_norm: 1.0,
        sampling_rate: 1.0,
        noise_multiplier: 4.0,
        rounds: 100,
        min_survivors: 3,
        bias_scale: 1.0,
    }
}

fn target() -> PrivacyTarget {
    PrivacyTarget { epsilon: 8.0, delta: 1e-5 }
}

#[test]
fn bad_configs_name_the_parameter() {
    let p = params();
    for (bad, name) in [
        (DpParams { clip_norm: 0.0, ..p }, "clip_norm"),
        (DpParams { clip_norm: f64::INFINITY, ..p }, "clip_norm"),
        (DpParams { sampling_rate: 0.0, ..p }, "sampling_rate"),
        (DpParams { sampling_rate: 1.5, ..p }, "sampling_rate"),
        (DpParams { sampling_rate: f64::NAN, ..p }, "sampling_rate"),
        (DpParams { noise_multiplier: 0.0, ..p }, "noise_multiplier"),
        (DpParams { noise_multiplier: -1.0, ..p }, "noise_multiplier"),
        (DpParams { rounds: 0, ..p }, "rounds"),
        (DpParams { rounds: MAX_ROUNDS + 1, ..p }, "rounds"),
        (DpParams { min_survivors: 0, ..p }, "min_survivors"),
        (DpParams { bias_scale: -0.1, ..p }, "bias_scale"),
        (DpParams { bias_scale: 1.5, ..p }, "bias_scale"),
    ] {
        match DpConfig::new(bad) {
            Err(DpError::InvalidParameter { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    let ok = DpConfig::new(p).unwrap();
    let json = serde_json::to_string(&ok).unwrap();
    assert_eq!(serde_json::from_str::<DpConfig>(&json).unwrap(), ok);
    let e = serde_json::from_str::<DpConfig>(&json.replace("\"rounds\":100", "\"rounds\":0")).unwrap_err();
    assert!(e.to_string().contains("rounds = 0"), "{e}");
    // `bias_scale` defaults to plain softmax regression.
    let without = json.replace(",\"bias_scale\":1.0", "");
    assert_ne!(without, json);
    assert_eq!(serde_json::from_str::<DpConfig>(&without).unwrap(), ok);
}

#[test]
fn calibration_meets_the_target_tightly() {
    let base = DpParams { sampling_rate: 0.1, rounds: 300, ..params() };
    let c = DpConfig::calibrate(base, target(), None).unwrap();
    let eps = c.epsilon_gaussian(1e-5, 300).unwrap();
    assert!(eps <= 8.0 && eps > 7.99, "{eps}");
    let less =
        DpConfig::new(DpParams { noise_multiplier: c.noise_multiplier() * 0.99, ..c.params() }).unwrap();
    assert!(less.epsilon_gaussian(1e-5, 300).unwrap() > 8.0);
    // Fewer rounds spend less.
    assert!(c.epsilon_gaussian(1e-5, 100).unwrap() < eps);
    // Unreachable: one record sampled every round with a tiny epsilon and a million rounds.
    let all = DpParams { sampling_rate: 1.0, rounds: MAX_ROUNDS, ..params() };
    let e = DpConfig::calibrate(all, PrivacyTarget { epsilon: 1e-3, delta: 1e-5 }, None);
    assert!(matches!(e, Err(DpError::Accounting(_))), "{e:?}");
    assert!(matches!(
        DpConfig::calibrate(base, PrivacyTarget { epsilon: 1.0, delta: 2.0 }, None),
        Err(DpError::Accounting(_))
    ));
    let e = DpConfig::calibrate(DpParams { clip_norm: -1.0, ..base }, target(), None).unwrap_err();
    assert!(matches!(e, DpError::InvalidParameter { name: "clip_norm", .. }), "{e}");
}

/// A grid as a 32-bit secure-aggregation round of 5 would use.
fn grid(c: &DpConfig, dimension: u64) -> (Quantizer, Grid) {
    let headroom = c.noise_headroom(100.0, 5, dimension, 32).unwrap();
    let q = Quantizer::new(QuantizerSpec {
        clip: 100.0,
        max_summands: 5,
        noise_headroom: headroom,
        modulus_bits: 32,
    })
    .unwrap();
    (q, Grid { scale: q.scale(), dimension, cohort: 5 })
}

#[test]
fn without_subsampling_the_discrete_shares_cost_what_the_gaussian_costs() {
    let c = DpConfig::calibrate(params(), target(), None).unwrap();
    let (_, g) = grid(&c, 618_000);
    let gaussian = c.epsilon_gaussian(1e-5, 100).unwrap();
    let discrete = c.epsilon_distributed(1e-5, 100, &g).unwrap();
    assert!(discrete >= gaussian && discrete < gaussian * 1.001, "{discrete} vs {gaussian}");
    let on_grid = DpConfig::calibrate(params(), target(), Some(&g)).unwrap();
    assert!(on_grid.epsilon_distributed(1e-5, 100, &g).unwrap() <= 8.0);
    assert!((on_grid.noise_multiplier() / c.noise_multiplier() - 1.0).abs() < 1e-3);
    // The ledger charges the same mechanism.
    let plan = Charge::Training(on_grid.training_plan(&g).unwrap());
    let cost = plan.worst_case(1e-5).unwrap();
    assert_eq!(cost.epsilon, on_grid.epsilon_distributed(1e-5, 100, &g).unwrap());
}

#[test]
fn with_subsampling_the_generic_amplification_bound_costs_more_noise() {
    let base = DpParams { sampling_rate: 0.1, ..params() };
    let c = DpConfig::calibrate(base, target(), None).unwrap();
    let (_, g) = grid(&c, 10_000);
    let discrete = DpConfig::calibrate(base, target(), Some(&g)).unwrap();
    assert!(discrete.noise_multiplier() > c.noise_multiplier());
    assert!(discrete.epsilon_distributed(1e-5, 100, &g).unwrap() <= 8.0);
}

#[test]
fn a_coarse_grid_pays_for_its_rounding() {
    let c = DpConfig::new(params()).unwrap();
    let fine = Grid { scale: 1e6, dimension: 10_000, cohort: 5 };
    let coarse = Grid { scale: 10.0, ..fine };
    let (f, k) = (
        c.epsilon_distributed(1e-5, 100, &fine).unwrap(),
        c.epsilon_distributed(1e-5, 100, &coarse).unwrap(),
    );
    assert!(k > 2.0 * f, "coarse {k} vs fine {f}");
    assert!(c.share_mechanism(&Grid { scale: 0.0, ..fine }).is_err());
    assert!(c.share_mechanism(&Grid { cohort: 2, ..fine }).is_err());
    assert!(c.share_mechanism(&Grid { dimension: 0, ..fine }).is_err());
}

/// The exact path end to end: quantise with the secure-aggregation quantiser, add each participant's
/// share, sum modulo 2^32, decode. The decoded noise must have the stated variance: `survivors *
/// share_std^2` per coordinate, which is `(noise_multiplier * clip_norm)^2` at `min_survivors`.
#[test]
fn decoded_noise_on_the_sum_has_the_stated_variance() {
    let c = DpConfig::new(DpParams { noise_multiplier: 2.0, clip_norm: 0.5, ..params() }).unwrap();
    let d = 10_000usize;
    let (q, g) = grid(&c, d as u64);
    let mechanism = c.share_mechanism(&g).unwrap();
    let mut rng = os_rng().unwrap();
    let inputs: Vec<Vec<f32>> =
        (0..5).map(|i| (0..d).map(|j| ((i * 31 + j * 17) % 200) as f32 / 10.0 - 10.0).collect()).collect();
    for survivors in [3usize, 5] {
        let mut sum = vec![0u32; d];
        for v in &inputs[..survivors] {
            let mut encoded = q.encode(v, &mut rng).unwrap();
            q.add_integer_noise(&mut encoded, &noise_share(&mechanism, d).unwrap()).unwrap();
            for (s, e) in sum.iter_mut().zip(&encoded) {
                *s = s.wrapping_add(*e);
            }
        }
        let decoded = q.decode_sum(&sum);
        let errors: Vec<f64> = (0..d)
            .map(|j| decoded[j] - inputs[..survivors].iter().map(|v| f64::from(v[j])).sum::<f64>())
            .collect();
        let mean = errors.iter().sum::<f64>() / d as f64;
        let var = errors.iter().map(|e| (e - mean) * (e - mean)).sum::<f64>() / (d - 1) as f64;
        let stated = mechanism.aggregate_variance(survivors as u32) / (q.scale() * q.scale());
        assert!((stated - survivors as f64 * c.share_std().powi(2)).abs() < 1e-9 * stated);
        // Relative standard error of a sample variance over 10^4 draws: sqrt(2 / 10^4) = 1.4%; a band
        // of 5 of them. Quantisation adds at most survivors / (4 scale^2), negligible here.
        assert!((var / stated - 1.0).abs() < 0.07, "{survivors} survivors: variance {var}, stated {stated}");
        assert!(mean.abs() < 5.0 * (stated / d as f64).sqrt(), "mean {mean}");
    }
    assert!((c.share_std() * c.share_std() * 3.0 - 1.0).abs() < 1e-12);
    assert!(matches!(noise_share(&mechanism, d - 1), Err(DpError::Length { .. })));
}

#[test]
fn the_headroom_covers_the_noise_of_every_share() {
    let c = DpConfig::new(params()).unwrap();
    for (clip, dim) in [(100.0, 618_000u64), (1.0, 1000), (1e4, 5_000_000)] {
        let h = c.noise_headroom(clip, 5, dim, 32).unwrap();
        let q = Quantizer::new(QuantizerSpec { clip, max_summands: 5, noise_headroom: h, modulus_bits: 32 })
            .unwrap();
        let total_std = c.share_std() * 5f64.sqrt() * q.scale();
        // Sub-Gaussian tail 2 exp(-t^2 / 2) per coordinate, union over `dim`, at most 2^-40.
        let tails = (2.0 * (2.0 * dim as f64 * 2f64.powi(40)).ln()).sqrt();
        assert!(h as f64 >= tails * total_std, "clip {clip}: headroom {h} for std {total_std}");
        assert!((h as f64) < 1.01 * tails * total_std + 1.0, "clip {clip}: headroom {h} wastes the ring");
    }
    assert!(c.noise_headroom(0.0, 5, 10, 32).is_err());
    assert!(c.noise_headroom(1.0, 5, 10, 40).is_err());
    assert!(c.noise_headroom(1.0, 0, 10, 32).is_err());
}

/// The rounds of the CLINC150 simulation: 5 institutions, the largest with 3174 records, clip 0.1.
fn clinc_round() -> RoundShape {
    RoundShape { quantizer_clip: 317.4, cohort: 5, dimension: 618_647, modulus_bits: 32 }
}

#[test]
fn the_plan_matches_the_real_quantiser_and_its_headroom_covers_the_noise() {
    let base = DpParams { clip_norm: 0.1, min_survivors: 4, ..params() };
    for (sampling_rate, round) in [
        (1.0, clinc_round()),
        (0.2, clinc_round()),
        (1.0, RoundShape { quantizer_clip: 2.0, cohort: 10, dimension: 1000, modulus_bits: 20 }),
    ] {
        let base = DpParams { sampling_rate, ..base };
        let plan = DpConfig::plan(base, target(), round).unwrap();
        let q = Quantizer::new(QuantizerSpec {
            clip: round.quantizer_clip,
            max_summands: round.cohort,
            noise_headroom: plan.noise_headroom,
            modulus_bits: round.modulus_bits,
        })
        .unwrap();
        assert_eq!(q.scale(), plan.grid.scale, "{round:?}");
        assert_eq!((plan.grid.dimension, plan.grid.cohort), (round.dimension, round.cohort));
        let c = plan.config;
        let needed =
            c.noise_headroom(round.quantizer_clip, round.cohort, round.dimension, round.modulus_bits);
        assert!(needed.unwrap() <= plan.noise_headroom);
        // Calibrated on that grid, tightly, and never below the continuous calibration.
        assert!(c.epsilon_distributed(1e-5, 100, &plan.grid).unwrap() <= 8.0);
        let less = DpConfig::new(DpParams { noise_multiplier: c.noise_multiplier() * 0.999, ..c.params() });
        assert!(less.unwrap().epsilon_distributed(1e-5, 100, &plan.grid).unwrap() > 8.0);
        let continuous = DpConfig::calibrate(base, target(), None).unwrap();
        assert!(c.noise_multiplier() >= continuous.noise_multiplier());
        assert_eq!(
            DpParams { noise_multiplier: 1.0, ..c.params() },
            DpParams { noise_multiplier: 1.0, ..base }
        );
    }
    // A 6-bit ring leaves no level for each of 100 summands.
    let tiny = RoundShape { quantizer_clip: 1.0, cohort: 100, dimension: 10, modulus_bits: 6 };
    let e = DpConfig::plan(DpParams { min_survivors: 50, ..base }, target(), tiny).unwrap_err();
    assert!(matches!(e, DpError::NoRoomForNoise { modulus_bits: 6, cohort: 100 }), "{e}");
    for (bad, name) in [
        (RoundShape { quantizer_clip: 0.0, ..clinc_round() }, "quantizer_clip"),
        (RoundShape { cohort: 0, ..clinc_round() }, "cohort"),
        (RoundShape { dimension: 0, ..clinc_round() }, "dimension"),
        (RoundShape { modulus_bits: 33, ..clinc_round() }, "modulus_bits"),
    ] {
        match DpConfig::plan(base, target(), bad) {
            Err(DpError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// What the coordinator's ledger does with [`DpConfig::training_plan`]: a job calibrated to the family's
/// budget fits it exactly, at the delta the family charges at.
#[test]
fn the_ledger_accepts_a_job_calibrated_to_the_budget_and_refuses_more() {
    use hearth_policies::{BudgetError, FamilyId, Ledger, PrivacyPolicy, TenantId, Timestamp};

    let policy = |epsilon: f64, delta_per_charge: &str, min_participants: u32| {
        PrivacyPolicy::from_toml(&format!(
            "[tenants.bank-a.families.intent]\nepsilon = {epsilon}\ndelta = 1e-5\n{delta_per_charge}\n\
             privacy_unit = \"record\"\nclipping_norm = 1.0\nmin_participants = {min_participants}\n"
        ))
        .unwrap()
    };
    let base = DpParams { clip_norm: 0.1, min_survivors: 4, ..params() };
    let plan = DpConfig::plan(base, target(), clinc_round()).unwrap();
    let job = || Charge::Training(plan.config.training_plan(&plan.grid).unwrap());
    let (bank, intent) = (vec![TenantId("bank-a".into())], FamilyId("intent".into()));
    let reserve = |p: &PrivacyPolicy| Ledger::new().reserve(p, &bank, &intent, "job-1", job(), Timestamp(0));

    assert!(reserve(&policy(8.0, "delta_per_charge = 1e-5", 3)).is_ok());
    let over = reserve(&policy(7.9, "delta_per_charge = 1e-5", 3)).unwrap_err();
    assert!(matches!(over, BudgetError::Exceeded { .. }), "{over}");
    // By default a family charges each job at a tenth of its delta, where the same job costs more: a job
    // must be calibrated at the delta its family charges at.
    assert!(matches!(reserve(&policy(8.0, "", 3)), Err(BudgetError::Exceeded { .. })));
    // Shares calibrated to 4 survivors do not meet a policy that asks for 5 participants.
    let few = reserve(&policy(8.0, "delta_per_charge = 1e-5", 5)).unwrap_err();
    assert!(matches!(few, BudgetError::CohortTooSmall { .. }), "{few}");
}
