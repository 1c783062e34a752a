use super::*;

const HEADER: &str = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

fn parse(rows: &str) -> ImportReport<Transaction> {
    parse_transactions(&format!("{HEADER}{rows}")).unwrap()
}

#[test]
fn rows_parse_in_both_date_forms() {
    let r = parse(
        "536365,84029E,\"RED WOOLLY HOTTIE, WHITE\",6,2010-12-01T08:26,3.39,17850,United Kingdom\n\
         536366,22632,HAND WARMER,6,12/1/2010 8:28,1.85,17850.0,France\n\
         C536379,22633,,-1,2010-12-01 09:41:05,27.5,,United Kingdom\n",
    );
    assert_eq!(r.errors, vec![]);
    assert_eq!(r.examples[0].description, "RED WOOLLY HOTTIE, WHITE");
    assert_eq!(r.examples[0].date, "2010-12-01T08:26:00");
    assert_eq!(r.examples[1].date, "2010-12-01T08:28:00");
    assert_eq!(r.examples[1].customer.as_deref(), Some("17850"));
    assert_eq!(r.examples[2].customer, None);
    assert_eq!(r.examples[2].quantity, -1);
    assert_eq!((r.examples[0].line, r.examples[2].line), (2, 4));
}

#[test]
fn bad_rows_are_reported_by_line() {
    let r = parse(
        "1,22632,a,six,2010-12-01T08:26,1.0,1,UK\n\
         2,22632,a,6,2010-13-01T08:26,1.0,1,UK\n\
         3,22632,a,6,2010-12-01T08:26,cheap,1,UK\n\
         4,22632,a,6,2010-12-01T08:26,1.0,1\n\
         5,,a,6,2010-12-01T08:26,1.0,1,UK\n\
         6,22632,a,6,2010-12-01T08:26,NaN,1,UK\n\
         7,22632,a,6,yesterday,1.0,1,UK\n\
         8,22632,a,6,2010-12-01T08:26,1.0,1,\n\
         9,22632,a,6,2010-12-01T08:26,1.0,1,UK\n",
    );
    let got: Vec<(usize, &str)> = r.errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
    let want = [
        (2, "quantity \"six\""),
        (3, "invoice date"),
        (4, "unit price \"cheap\""),
        (5, "7 fields"),
        (6, "stock code \"\""),
        (7, "unit price \"NaN\""),
        (8, "invoice date \"yesterday\""),
        (9, "country \"\""),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((line, reason), (wl, wr)) in got.iter().zip(want) {
        assert_eq!(*line, wl);
        assert!(reason.contains(wr), "line {line}: {reason:?} lacks {wr:?}");
    }
    assert_eq!(r.examples.len(), 1);
}

#[test]
fn files_without_the_columns_are_errors() {
    assert!(parse_transactions("").unwrap_err().to_string().contains("empty"));
    let e = parse_transactions("InvoiceNo,StockCode\n1,2\n").unwrap_err();
    assert!(e.to_string().contains("\"Quantity\""), "{e}");
    // Description is optional; the order of columns is free.
    let r = parse_transactions(
        "Country,CustomerID,UnitPrice,InvoiceDate,Quantity,StockCode,InvoiceNo\nUK,1,2.0,2011-01-01T00:00,1,22632,9\n",
    )
    .unwrap();
    assert_eq!(r.errors, vec![]);
    assert_eq!(r.examples[0].invoice, "9");
}

#[test]
fn cleaning_follows_the_documented_rules() {
    let r = parse(
        "1,22632,a,6,2011-01-01T10:00,1.0,,UK\n\
         2,POST,postage,1,2011-01-01T10:00,18.0,1,UK\n\
         3,22632,a,6,2011-01-01T10:00,1.0,1,UK\n\
         C4,22632,a,-6,2011-01-02T10:00,1.0,1,UK\n\
         5,22633,b,2,2011-01-01T10:00,1.0,1,UK\n\
         C6,22633,b,-1,2011-01-02T10:00,1.0,1,UK\n\
         7,22634,c,1,2011-01-01T10:00,0.0,1,UK\n\
         8,22635,d,1,2011-01-01T10:00,2.0,2,UK\n",
    );
    let (purchases, report) = clean(&r.examples);
    assert_eq!(
        report,
        CleaningReport {
            rows: 8,
            anonymous: 1,
            non_product: 1,
            cancellations: 2,
            free: 1,
            returned_pairs: 1,
            purchases: 2
        }
    );
    // 22632 was returned in full; 22633 only in part, so it stays.
    let kept: Vec<(&str, &str)> = purchases.iter().map(|p| (p.customer.as_str(), p.item.as_str())).collect();
    assert_eq!(kept, [("1", "22633"), ("2", "22635")]);
    assert!(is_product("84029E") && is_product("10002") && !is_product("DCGS0070") && !is_product("C2"));
}

#[test]
fn encoding_keeps_each_item_once_and_skips_unknown_items() {
    let p = |c: &str, item: &str, inv: &str| Purchase {
        customer: c.into(),
        item: item.into(),
        invoice: inv.into(),
        date: "2011-01-01T00:00:00".into(),
        country: "UK".into(),
        line: 0,
    };
    let spec = RecommendSpec::with_defaults(vec!["a".into(), "b".into()], vec![], 14_975, 2).unwrap();
    let ps =
        [p("c1", "a", "i1"), p("c1", "a", "i1"), p("c1", "a", "i2"), p("c1", "b", "i2"), p("c2", "zz", "i3")];
    let d = encode(&spec, &ps);
    assert_eq!(d.len(), 1, "a customer with only unknown items is left out");
    assert_eq!(d.unknown_items(), 1);
    let h = d.history(&spec, "c1").unwrap();
    assert_eq!(h.iter().map(|s| s.item.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(d.rows[0], [(0, 14_975, 14_975), (1, 14_975, 14_975)], "a once, for its two invoices");
    assert_eq!(catalogue(&ps), ["a", "b", "zz"]);
}
