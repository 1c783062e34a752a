//! Purchases for the recommender: the Online Retail transactions parser, the cleaning rules, and the
//! encoded per-customer histories a participant trains on.
//!
//! Cleaning ([`clean`]), row by row, in this order:
//! 1. **No CustomerID** (anonymous checkout; 10,057 of the 40,000 rows): dropped. Such a purchase cannot
//!    be tied to a customer's other purchases, so it carries no collaborative signal.
//! 2. **Not a product** (a stock code that does not start with five digits: `POST`, `DOT`, `M`, `D`,
//!    `BANK CHARGES`, `AMAZONFEE`, gift vouchers...): dropped. Postage and fees are not recommendations.
//! 3. **Cancellations** (an invoice starting with `C`, or a quantity of zero or less): never a purchase;
//!    the cancelled quantity is subtracted from that customer's net quantity of the item.
//! 4. **Free lines** (unit price of zero or less with a positive quantity: samples, corrections): dropped.
//! 5. Every other row is a purchase. Afterwards, a (customer, item) pair whose net quantity is zero or
//!    less (bought and returned in full) loses all its purchases: a returned item is not a preference.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::data::{csv_records, ImportReport, RowError};
use crate::recommend::{RecommendSpec, Seen, MAX_ITEM_BYTES};
use crate::ModelError;

/// One row of a transactions file. Serialisable so that a participant can keep the rows it imported and
/// clean them again, with later imports' cancellations, when it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// 1-based line the row starts on.
    pub line: usize,
    /// Invoice number; a leading `C` marks a cancellation.
    pub invoice: String,
    /// Item id.
    pub stock_code: String,
    /// Product name, as written (may be empty).
    pub description: String,
    /// Units; negative on cancellations.
    pub quantity: i64,
    /// `YYYY-MM-DDTHH:MM:SS`, normalised so that strings sort as times.
    pub date: String,
    /// Price per unit.
    pub unit_price: f64,
    /// The customer, if known.
    pub customer: Option<String>,
    /// The customer's country.
    pub country: String,
}

/// A cleaned purchase: a known customer bought a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The customer.
    pub customer: String,
    /// Item id.
    pub item: String,
    /// Invoice number.
    pub invoice: String,
    /// `YYYY-MM-DDTHH:MM:SS`.
    pub date: String,
    /// The customer's country on this invoice.
    pub country: String,
    /// Line in the source file (orders purchases within one invoice).
    pub line: usize,
}

/// What [`clean`] did with each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CleaningReport {
    /// Rows examined.
    pub rows: usize,
    /// Rows without a customer, dropped.
    pub anonymous: usize,
    /// Rows whose stock code is not a product, dropped.
    pub non_product: usize,
    /// Cancellation rows, netted against purchases.
    pub cancellations: usize,
    /// Rows with a price of zero or less, dropped.
    pub free: usize,
    /// (customer, item) pairs returned in full, whose purchases were dropped.
    pub returned_pairs: usize,
    /// Purchases kept.
    pub purchases: usize,
}

const COLUMNS: [&str; 7] =
    ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"];

/// Parses a transactions CSV with the Online Retail columns (`InvoiceNo, StockCode, Description,
/// Quantity, InvoiceDate, UnitPrice, CustomerID, Country`, in any order; `Description` optional). A
/// missing column is an error; bad rows are reported by line.
pub fn parse_transactions(content: &str) -> Result<ImportReport<Transaction>, ModelError> {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut records = csv_records(content).into_iter();
    let (_, header) = records.next().ok_or_else(|| ModelError::InvalidData("the file is empty".into()))?;
    let header = header.map_err(|e| ModelError::InvalidData(format!("header: {e}")))?;
    let col = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let mut at = [0usize; 7];
    for (slot, name) in at.iter_mut().zip(COLUMNS) {
        *slot = col(name).ok_or_else(|| {
            ModelError::InvalidData(format!("the header has no {name:?} column; found {header:?}"))
        })?;
    }
    let desc = col("Description");
    let mut r = ImportReport::default();
    for (line, rec) in records {
        let row = rec.and_then(|f| {
            if f.len() != header.len() {
                return Err(format!("{} fields, the header has {}", f.len(), header.len()));
            }
            let get = |i: usize| f.get(i).map_or("", |s| s.trim());
            parse_row(
                line,
                [get(at[0]), get(at[1]), get(at[2]), get(at[3]), get(at[4]), get(at[5]), get(at[6])],
                desc.map_or("", get),
            )
        });
        match row {
            Ok(t) => r.examples.push(t),
            Err(reason) => r.errors.push(RowError { line, reason }),
        }
    }
    Ok(r)
}

fn parse_row(line: usize, f: [&str; 7], description: &str) -> Result<Transaction, String> {
    let [invoice, code, qty, date, price, customer, country] = f;
    let id = |what: &str, s: &str| -> Result<String, String> {
        if s.is_empty() || s.len() > MAX_ITEM_BYTES || s.chars().any(char::is_control) {
            return Err(format!(
                "{what} {s:?} must be 1 to {MAX_ITEM_BYTES} bytes without control characters"
            ));
        }
        Ok(s.to_string())
    };
    let quantity: i64 = qty.parse().map_err(|_| format!("quantity {qty:?} is not a whole number"))?;
    let unit_price: f64 = price
        .parse()
        .ok()
        .filter(|p: &f64| p.is_finite())
        .ok_or_else(|| format!("unit price {price:?} is not a number"))?;
    let customer = match customer {
        "" => None,
        c => Some(id("customer", c.strip_suffix(".0").unwrap_or(c))?),
    };
    Ok(Transaction {
        line,
        invoice: id("invoice", invoice)?,
        stock_code: id("stock code", code)?,
        description: description.to_string(),
        quantity,
        date: normalise_date(date)
            .ok_or_else(|| format!("invoice date {date:?} is not YYYY-MM-DD HH:MM or M/D/YYYY H:MM"))?,
        unit_price,
        customer,
        country: id("country", country)?,
    })
}

/// `YYYY-MM-DD[T ]HH:MM[:SS]` or `M/D/YYYY H:MM[:SS]` to `YYYY-MM-DDTHH:MM:SS`.
fn normalise_date(s: &str) -> Option<String> {
    let (d, t) = s.split_once(['T', ' '])?;
    let num = |x: &str, lo: u32, hi: u32| x.parse::<u32>().ok().filter(|v| (lo..=hi).contains(v));
    let (y, m, day) = if d.contains('-') {
        let mut it = d.split('-');
        (it.next()?, it.next()?, it.next()?)
    } else {
        let mut it = d.split('/');
        let (m, day) = (it.next()?, it.next()?);
        (it.next()?, m, day)
    };
    let mut tp = t.split(':');
    let (h, mi, sec) = (tp.next()?, tp.next()?, tp.next().unwrap_or("0"));
    if tp.next().is_some() || y.len() != 4 {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        num(y, 1900, 2999)?,
        num(m, 1, 12)?,
        num(day, 1, 31)?,
        num(h, 0, 23)?,
        num(mi, 0, 59)?,
        num(sec, 0, 59)?
    ))
}

/// Whether a stock code names a product: it starts with five digits.
pub fn is_product(code: &str) -> bool {
    code.len() >= 5 && code.bytes().take(5).all(|b| b.is_ascii_digit())
}

/// Applies the cleaning rules of this module's doc; purchases keep the file's order.
pub fn clean(rows: &[Transaction]) -> (Vec<Purchase>, CleaningReport) {
    let mut report = CleaningReport { rows: rows.len(), ..Default::default() };
    let mut net: HashMap<(&str, &str), i64> = HashMap::new();
    let mut kept: Vec<&Transaction> = Vec::new();
    for t in rows {
        let Some(customer) = t.customer.as_deref() else {
            report.anonymous += 1;
            continue;
        };
        if !is_product(&t.stock_code) {
            report.non_product += 1;
            continue;
        }
        let key = (customer, t.stock_code.as_str());
        if t.invoice.starts_with(['C', 'c']) || t.quantity <= 0 {
            report.cancellations += 1;
            *net.entry(key).or_default() -= t.quantity.saturating_abs();
            continue;
        }
        if t.unit_price <= 0.0 {
            report.free += 1;
            continue;
        }
        *net.entry(key).or_default() += t.quantity;
        kept.push(t);
    }
    let returned: HashSet<(&str, &str)> = net.iter().filter(|(_, &q)| q <= 0).map(|(k, _)| *k).collect();
    let bought: HashSet<(&str, &str)> =
        kept.iter().filter_map(|t| Some((t.customer.as_deref()?, t.stock_code.as_str()))).collect();
    report.returned_pairs = returned.intersection(&bought).count();
    let purchases: Vec<Purchase> = kept
        .into_iter()
        .filter_map(|t| {
            let customer = t.customer.as_deref()?;
            if returned.contains(&(customer, t.stock_code.as_str())) {
                return None;
            }
            Some(Purchase {
                customer: customer.to_string(),
                item: t.stock_code.clone(),
                invoice: t.invoice.clone(),
                date: t.date.clone(),
                country: t.country.clone(),
                line: t.line,
            })
        })
        .collect();
    report.purchases = purchases.len();
    (purchases, report)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD...` date (the proleptic Gregorian calendar), or `None` if it
/// does not start with one.
pub fn day_number(date: &str) -> Option<i32> {
    let d = date.get(..10)?;
    let mut it = d.split('-');
    let (y, m, dd): (i64, i64, i64) =
        (it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || !(0..=9999).contains(&y) {
        return None;
    }
    i32::try_from(crate::calendar::days_from_civil(y, m, dd)).ok()
}

/// `YYYY-MM-DD` of a day number (the inverse of [`day_number`]).
pub fn day_string(day: i32) -> String {
    let (y, m, d) = crate::calendar::civil_from_days(i64::from(day));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Item id to its most frequent non-empty description in `rows` (among equals, the first in
/// alphabetical order).
pub fn descriptions(rows: &[Transaction]) -> BTreeMap<String, String> {
    let mut seen: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for r in rows.iter().filter(|r| !r.description.trim().is_empty()) {
        *seen.entry(&r.stock_code).or_default().entry(r.description.trim()).or_default() += 1;
    }
    seen.into_iter()
        .filter_map(|(item, names)| {
            let best = names.iter().rev().max_by_key(|(_, n)| **n).map(|(d, _)| d.to_string())?;
            Some((item.to_string(), best))
        })
        .collect()
}

/// The first and last day (see [`day_number`]) of `purchases`, or `None` when there are none.
pub fn date_range(purchases: &[Purchase]) -> Option<(i32, i32)> {
    let days = purchases.iter().filter_map(|p| day_number(&p.date));
    days.fold(None, |acc, d| Some(acc.map_or((d, d), |(lo, hi): (i32, i32)| (lo.min(d), hi.max(d)))))
}

/// A spec with the tuned scoring for `purchases`: their catalogue, each item's description from
/// `descriptions` (empty when it has none), and a window from their first to their last day.
pub fn spec_for(
    purchases: &[Purchase],
    descriptions: &BTreeMap<String, String>,
) -> Result<RecommendSpec, ModelError> {
    let items = catalogue(purchases);
    let names = items.iter().map(|i| descriptions.get(i).cloned().unwrap_or_default()).collect();
    let (first, last) =
        date_range(purchases).ok_or_else(|| ModelError::InvalidData("no purchases with a date".into()))?;
    let days = u32::try_from(last - first + 1).unwrap_or(u32::MAX);
    RecommendSpec::with_defaults(items, names, first, days)
}

/// The sorted, unique item ids of `purchases`: a catalogue for [`RecommendSpec::new`].
pub fn catalogue(purchases: &[Purchase]) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = purchases.iter().map(|p| p.item.as_str()).collect();
    set.into_iter().map(str::to_string).collect()
}

/// An item with the number of distinct customers who bought it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopularItem {
    /// Item id.
    pub item: String,
    /// Distinct buyers.
    pub buyers: u32,
}

/// One institution's customers and what each bought, encoded against a catalogue: what a participant
/// trains on and looks histories up in. Built once per spec and reused every round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interactions {
    pub(crate) customers: Vec<String>,
    /// Per customer: (item index, first day, last day they bought it; see [`day_number`]), sorted by
    /// item.
    pub(crate) rows: Vec<Vec<(u32, i32, i32)>>,
    index: HashMap<String, usize>,
    unknown_items: usize,
}

/// Encodes `purchases` for `spec`. Purchases of items outside the catalogue are skipped and counted
/// ([`Interactions::unknown_items`]): an institution may sell products the consortium's catalogue lacks.
pub fn encode(spec: &RecommendSpec, purchases: &[Purchase]) -> Interactions {
    let index = spec.item_index();
    // Per customer, per item: the first and the last day they bought it.
    let mut bought: BTreeMap<&str, BTreeMap<u32, (i32, i32)>> = BTreeMap::new();
    let mut unknown_items = 0;
    for p in purchases {
        // The cleaning rules only keep parsed dates; an unparsable one counts as the earliest day.
        let day = day_number(&p.date).unwrap_or(0);
        match index.get(p.item.as_str()) {
            Some(&i) => {
                let e = bought.entry(p.customer.as_str()).or_default().entry(i).or_insert((day, day));
                *e = (e.0.min(day), e.1.max(day));
            }
            None => unknown_items += 1,
        }
    }
    let mut out = Interactions { unknown_items, ..Default::default() };
    for (customer, items) in bought {
        out.index.insert(customer.to_string(), out.customers.len());
        out.customers.push(customer.to_string());
        out.rows.push(items.into_iter().map(|(i, (first, last))| (i, first, last)).collect());
    }
    out
}

impl Interactions {
    /// Number of customers.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Customer ids, sorted.
    pub fn customers(&self) -> &[String] {
        &self.customers
    }

    /// Purchases skipped because their item is not in the catalogue.
    pub fn unknown_items(&self) -> usize {
        self.unknown_items
    }

    /// The items `customer` bought, each with the last day they bought it, oldest first (ties by item
    /// id), ready for [`crate::RecommendModel::recommend`]; an unknown customer is an error naming them.
    pub fn history(&self, spec: &RecommendSpec, customer: &str) -> Result<Vec<Seen>, ModelError> {
        let u = *self.index.get(customer).ok_or_else(|| ModelError::UnknownCustomer(customer.to_string()))?;
        let mut out: Vec<Seen> = self
            .dated_row(u)
            .filter_map(|(i, _, last)| {
                Some(Seen { item: spec.items.get(i as usize)?.clone(), day: Some(last) })
            })
            .collect();
        out.sort_by(|a, b| a.day.cmp(&b.day).then(a.item.cmp(&b.item)));
        Ok(out)
    }

    /// Customer `u`'s (item, first day, last day).
    pub(crate) fn dated_row(&self, u: usize) -> impl Iterator<Item = (u32, i32, i32)> + '_ {
        self.rows.get(u).map_or(&[][..], Vec::as_slice).iter().copied()
    }

    /// The position of `customer`, if they bought anything.
    pub(crate) fn position(&self, customer: &str) -> Option<usize> {
        self.index.get(customer).copied()
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
