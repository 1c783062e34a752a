//! Simulated institutions and the evaluation split for the recommender.
//!
//! - Institutions are countries, the dataset's natural partition: each customer belongs to the country
//!   of most of their purchases (ties to the alphabetically first), countries are ranked by number of
//!   customers (ties by name), the first `n - 1` are institutions of their own and every other country
//!   joins one "Other countries" institution. With 5 on Online Retail: United Kingdom, Germany, France,
//!   Belgium, and the other 31 countries together.
//! - Leave-last-out: each customer's items are ordered by when the customer first bought them (invoice
//!   date, then file line); the last one is the test item and all of its purchases leave the training
//!   data. The task is therefore "which product will this customer buy next that they have not bought
//!   before", and recommendations exclude what the customer already bought. A customer with a single
//!   item keeps it for training and is not evaluated (there is no history to recommend from).

use std::collections::{BTreeMap, HashMap};

use crate::recommend::data::{day_number, Purchase};
use crate::ModelError;

/// Name of the institution that groups the smaller countries.
pub const OTHER_COUNTRIES: &str = "Other countries";

/// One simulated institution.
#[derive(Debug, Clone, PartialEq)]
pub struct Institution {
    /// Its country, or [`OTHER_COUNTRIES`].
    pub name: String,
    /// The countries it covers.
    pub countries: Vec<String>,
    /// Its customers' purchases.
    pub purchases: Vec<Purchase>,
}

impl Institution {
    /// Distinct customers.
    pub fn customers(&self) -> usize {
        let mut c: Vec<&str> = self.purchases.iter().map(|p| p.customer.as_str()).collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    }
}

/// Each customer's country: where most of their purchases were made.
fn customer_countries(purchases: &[Purchase]) -> HashMap<&str, &str> {
    let mut counts: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for p in purchases {
        *counts.entry(&p.customer).or_default().entry(&p.country).or_default() += 1;
    }
    counts
        .into_iter()
        .filter_map(|(c, m)| {
            // max_by_key keeps the last maximum; iterate in reverse name order so the first name wins.
            let best = m.iter().rev().max_by_key(|(_, &n)| n).map(|(country, _)| *country)?;
            Some((c, best))
        })
        .collect()
}

/// Partitions purchases into at most `n` institutions by country (see the module doc).
pub fn partition_by_country(purchases: &[Purchase], n: usize) -> Result<Vec<Institution>, ModelError> {
    if n == 0 {
        return Err(ModelError::InvalidSplit("zero institutions".into()));
    }
    let country_of = customer_countries(purchases);
    let mut customers: BTreeMap<&str, usize> = BTreeMap::new();
    for country in country_of.values() {
        *customers.entry(country).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = customers.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let own = if ranked.len() <= n { ranked.len() } else { n - 1 };
    let mut institutions: Vec<Institution> = ranked
        .iter()
        .take(own)
        .map(|(c, _)| Institution { name: c.to_string(), countries: vec![c.to_string()], purchases: vec![] })
        .collect();
    if ranked.len() > own {
        let mut rest: Vec<String> = ranked.iter().skip(own).map(|(c, _)| c.to_string()).collect();
        rest.sort();
        institutions.push(Institution { name: OTHER_COUNTRIES.into(), countries: rest, purchases: vec![] });
    }
    let slot: HashMap<&str, usize> = institutions
        .iter()
        .enumerate()
        .flat_map(|(i, inst)| inst.countries.iter().map(move |c| (c.as_str(), i)))
        .collect();
    let mut placed: Vec<Vec<Purchase>> = vec![Vec::new(); institutions.len()];
    for p in purchases {
        let i = country_of.get(p.customer.as_str()).and_then(|c| slot.get(c));
        if let Some(v) = i.and_then(|&i| placed.get_mut(i)) {
            v.push(p.clone());
        }
    }
    for (inst, ps) in institutions.iter_mut().zip(placed) {
        inst.purchases = ps;
    }
    Ok(institutions)
}

/// A customer's held-out item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOut {
    /// The customer.
    pub customer: String,
    /// The item they bought last for the first time.
    pub item: String,
    /// The day (see [`crate::recommend::data::day_number`]) they first bought it: the moment a
    /// recommendation is made for, so what is known then is all that may be used.
    pub day: i32,
}

/// Training purchases and one held-out item per evaluated customer.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaveLastOut {
    /// Everything but the held-out items' purchases.
    pub train: Vec<Purchase>,
    /// One per customer with at least two distinct items, sorted by customer.
    pub test: Vec<HeldOut>,
}

/// Leave-last-out by invoice date (see the module doc).
pub fn leave_last_out(purchases: &[Purchase]) -> LeaveLastOut {
    // Per customer, per item: the earliest (date, line).
    let mut first: BTreeMap<&str, HashMap<&str, (&str, usize)>> = BTreeMap::new();
    for p in purchases {
        let e = first.entry(&p.customer).or_default().entry(&p.item).or_insert((&p.date, p.line));
        if (p.date.as_str(), p.line) < *e {
            *e = (&p.date, p.line);
        }
    }
    let mut test = Vec::new();
    let mut held: HashMap<&str, &str> = HashMap::new();
    for (customer, items) in &first {
        if items.len() < 2 {
            continue;
        }
        if let Some((item, (date, _))) = items.iter().max_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0))) {
            held.insert(customer, item);
            let day = day_number(date).unwrap_or(0);
            test.push(HeldOut { customer: customer.to_string(), item: item.to_string(), day });
        }
    }
    let train = purchases
        .iter()
        .filter(|p| held.get(p.customer.as_str()) != Some(&p.item.as_str()))
        .cloned()
        .collect();
    LeaveLastOut { train, test }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(customer: &str, item: &str, date: &str, country: &str, line: usize) -> Purchase {
        Purchase {
            customer: customer.into(),
            item: item.into(),
            invoice: format!("{customer}-{date}"),
            date: date.into(),
            country: country.into(),
            line,
        }
    }

    #[test]
    fn the_newest_item_is_held_out_with_all_its_purchases() {
        let ps = vec![
            p("a", "x", "2011-01-01T10:00:00", "UK", 2),
            p("a", "y", "2011-01-02T10:00:00", "UK", 3),
            p("a", "x", "2011-01-03T10:00:00", "UK", 4),
            p("a", "z", "2011-01-02T10:00:00", "UK", 5),
            p("b", "x", "2011-01-01T10:00:00", "UK", 6),
            p("b", "x", "2011-02-01T10:00:00", "UK", 7),
        ];
        let s = leave_last_out(&ps);
        // a's last new item is z (same time as y, later line); x's repurchase does not count.
        assert_eq!(s.test, vec![HeldOut { customer: "a".into(), item: "z".into(), day: 14_976 }]);
        assert_eq!(s.train.len(), 5);
        assert!(s.train.iter().all(|t| t.item != "z"));
    }

    #[test]
    fn small_countries_are_grouped() {
        let mut ps = vec![];
        for i in 0..5 {
            ps.push(p(&format!("uk{i}"), "x", "2011-01-01T00:00:00", "United Kingdom", i));
        }
        for i in 0..3 {
            ps.push(p(&format!("de{i}"), "x", "2011-01-01T00:00:00", "Germany", 10 + i));
        }
        ps.push(p("fr", "x", "2011-01-01T00:00:00", "France", 20));
        ps.push(p("es", "x", "2011-01-01T00:00:00", "Spain", 21));
        // A customer of two countries belongs to the one of most purchases.
        ps.push(p("de0", "y", "2011-01-01T00:00:00", "Spain", 22));
        let inst = partition_by_country(&ps, 3).unwrap();
        let names: Vec<&str> = inst.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["United Kingdom", "Germany", OTHER_COUNTRIES]);
        assert_eq!(inst[2].countries, ["France", "Spain"]);
        assert_eq!(inst[1].purchases.len(), 4);
        assert_eq!(inst.iter().map(|i| i.purchases.len()).sum::<usize>(), ps.len());
        assert_eq!(partition_by_country(&ps, 10).unwrap().len(), 4);
        assert!(partition_by_country(&ps, 0).is_err());
    }
}
