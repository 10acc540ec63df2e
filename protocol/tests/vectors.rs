//! Every record of the reference vector file decodes and re-encodes byte for byte.

use moat_protocol::vectors;

const REFERENCE: &str = include_str!("../../conformance/vectors/reference-0.7.13.txt");

#[test]
fn every_reference_vector_round_trips() {
    let records = vectors::parse(REFERENCE).expect("vector file parses");
    let mut failures = Vec::new();
    for record in &records {
        if let Err(m) = vectors::check(record) {
            failures.push(m.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} records failed:\n{}",
        failures.len(),
        records.len(),
        failures.join("\n")
    );
    println!("{} records", records.len());
}
