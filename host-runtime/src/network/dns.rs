//! The DNS messages the guest's forwarder must understand, parsed without trusting them: the
//! question of a query (to answer `host.moat.internal` itself), the names and IPv4 addresses of
//! an answer (to feed domain rules' nft sets), and the two answers it writes (the alias's
//! address, and SERVFAIL). Sans-IO; never panics, never follows more than
//! [`MAX_NAME_POINTERS`] compression pointers, never allocates from a length it did not check.
//!
//! ```text
//!  header  | id u16 | flags u16 | qdcount | ancount | nscount | arcount |   (12 bytes, big endian)
//!  question  NAME (labels or a pointer 0b11xxxxxx xxxxxxxx) | type u16 | class u16
//!  answer    NAME | type u16 | class u16 | ttl u32 | rdlength u16 | rdata
//! ```

use std::net::Ipv4Addr;

/// Longest DNS message over UDP the forwarder handles (EDNS0's common ceiling).
pub const MAX_DNS_MESSAGE_BYTES: usize = 4096;

/// Most compression pointers followed while reading one name.
pub const MAX_NAME_POINTERS: usize = 16;

/// Most answer records read from one message.
pub const MAX_ANSWER_RECORDS: usize = 64;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;

const HEADER_BYTES: usize = 12;

/// A message's question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The message id.
    pub id: u16,
    /// The name, lowercase, without the trailing dot.
    pub name: String,
    /// The query type.
    pub qtype: u16,
    /// Where the question ends in the message.
    end: usize,
}

/// What an answer says: every name it mentions (the question's and the CNAME chain's) and the
/// IPv4 addresses with their TTLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The names, lowercase, without trailing dots.
    pub names: Vec<String>,
    /// The A records: address and TTL in seconds.
    pub addrs: Vec<(Ipv4Addr, u32)>,
}

/// Reads the id and the (first) question of `msg`; `None` when it is not a well-formed message
/// with one.
pub fn question(msg: &[u8]) -> Option<Question> {
    if msg.len() < HEADER_BYTES || u16_at(msg, 4)? == 0 {
        return None;
    }
    let (name, after) = read_name(msg, HEADER_BYTES)?;
    let qtype = u16_at(msg, after)?;
    u16_at(msg, after + 2)?;
    Some(Question { id: u16_at(msg, 0)?, name, qtype, end: after + 4 })
}

/// The names and A records of the answer `msg`.
pub fn answer(msg: &[u8]) -> Option<Answer> {
    let question = question(msg)?;
    let ancount = usize::from(u16_at(msg, 6)?).min(MAX_ANSWER_RECORDS);
    let mut out = Answer { names: vec![question.name], addrs: Vec::new() };
    let mut at = question.end;
    for _ in 0..ancount {
        let (name, after) = read_name(msg, at)?;
        let rtype = u16_at(msg, after)?;
        let ttl = u32_at(msg, after + 4)?;
        let len = usize::from(u16_at(msg, after + 8)?);
        let data = after + 10;
        let end = data.checked_add(len).filter(|end| *end <= msg.len())?;
        if !out.names.contains(&name) {
            out.names.push(name);
        }
        match rtype {
            TYPE_A if len == 4 => {
                out.addrs.push((
                    Ipv4Addr::new(msg[data], msg[data + 1], msg[data + 2], msg[data + 3]),
                    ttl,
                ));
            }
            TYPE_CNAME => {
                let (target, _) = read_name(msg, data)?;
                if !out.names.contains(&target) {
                    out.names.push(target);
                }
            }
            _ => {}
        }
        at = end;
    }
    Some(out)
}

/// The message with the same id as `query` in its first two bytes (the forwarder rewrites ids).
pub fn with_id(msg: &[u8], id: u16) -> Vec<u8> {
    let mut out = msg.to_vec();
    if out.len() >= 2 {
        out[..2].copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// The answer to `query` (whose question is `q`): one A record `addr` for an A query, no
/// record for another type (NOERROR, so the guest does not fall back to AAAA errors).
pub fn local_answer(query: &[u8], q: &Question, addr: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end + 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    let rd = query.get(2).map_or(0, |b| b & 0x01);
    out.extend_from_slice(&[0x84 | rd, 0x80]); // QR, AA, RD as asked; RA; NOERROR
    let answers: u16 = if q.qtype == TYPE_A { 1 } else { 0 };
    for count in [1, answers, 0, 0] {
        out.extend_from_slice(&u16::to_be_bytes(count));
    }
    out.extend_from_slice(&query[HEADER_BYTES..q.end]);
    if q.qtype == TYPE_A {
        out.extend_from_slice(&[0xc0, HEADER_BYTES as u8]); // pointer to the question's name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}

/// SERVFAIL for `query` (no upstream answered, or the forwarder is full).
pub fn servfail(query: &[u8], q: &Question) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.end);
    out.extend_from_slice(&q.id.to_be_bytes());
    let rd = query.get(2).map_or(0, |b| b & 0x01);
    out.extend_from_slice(&[0x80 | rd, 0x82]); // QR, RD as asked; RA; SERVFAIL
    for count in [1u16, 0, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out.extend_from_slice(&query[HEADER_BYTES..q.end]);
    out
}

/// Reads the name at `at`; returns it (lowercase, dotted, no trailing dot) and where the record
/// continues after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut continue_at = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => {
                return Some((name, continue_at.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                pointers += 1;
                if pointers > MAX_NAME_POINTERS {
                    return None;
                }
                let target = usize::from(u16_at(msg, at)? & 0x3fff);
                continue_at.get_or_insert(at + 2);
                at = target;
            }
            l if l & 0xc0 != 0 => return None,
            l => {
                let label = msg.get(at + 1..at + 1 + usize::from(l))?;
                if !name.is_empty() {
                    name.push('.');
                }
                if name.len() + label.len() > 253 {
                    return None;
                }
                name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
                at += 1 + usize::from(l);
            }
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(msg.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(msg.get(at..at + 4)?.try_into().ok()?))
}

/// Encodes a query for `name` of `qtype` with `id` (tests and the forwarder's tests' servers).
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00]);
    for count in [1u16, 0, 0, 0] {
        out.extend_from_slice(&count.to_be_bytes());
    }
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_with(query: &[u8], records: &[(&[u8], u16, &[u8])]) -> Vec<u8> {
        let mut msg = query.to_vec();
        msg[2] |= 0x80;
        msg[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for (name, rtype, data) in records {
            msg.extend_from_slice(name);
            msg.extend_from_slice(&rtype.to_be_bytes());
            msg.extend_from_slice(&1u16.to_be_bytes());
            msg.extend_from_slice(&300u32.to_be_bytes());
            msg.extend_from_slice(&(data.len() as u16).to_be_bytes());
            msg.extend_from_slice(data);
        }
        msg
    }

    #[test]
    fn a_query_question_is_read_lowercase() {
        let q = question(&encode_query(7, "Host.Moat.Internal", TYPE_A)).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (7, "host.moat.internal", TYPE_A));
    }

    #[test]
    fn an_answer_with_a_cname_chain_names_every_name_and_address() {
        let query = encode_query(1, "www.example.com", TYPE_A);
        // www.example.com CNAME cdn.example.net (written in full), cdn.example.net A 203.0.113.7
        let cname = [
            3, b'c', b'd', b'n', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'n', b'e', b't',
            0,
        ];
        let msg = answer_with(
            &query,
            &[(&[0xc0, 12], TYPE_CNAME, &cname), (&cname, TYPE_A, &[203, 0, 113, 7])],
        );
        let a = answer(&msg).unwrap();
        assert_eq!(a.names, vec!["www.example.com".to_owned(), "cdn.example.net".to_owned()]);
        assert_eq!(a.addrs, vec![(Ipv4Addr::new(203, 0, 113, 7), 300)]);
    }

    #[test]
    fn aaaa_records_are_skipped() {
        let query = encode_query(1, "a.b", TYPE_AAAA);
        let msg = answer_with(&query, &[(&[0xc0, 12], TYPE_AAAA, &[0; 16])]);
        assert_eq!(answer(&msg).unwrap().addrs, vec![]);
    }

    #[test]
    fn truncated_and_looping_messages_are_refused() {
        let query = encode_query(1, "a.b", TYPE_A);
        for cut in 0..query.len() {
            assert_eq!(question(&query[..cut]), None, "cut at {cut}");
        }
        let mut looping = query.clone();
        looping.truncate(12);
        looping.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(question(&looping), None);
        let msg = answer_with(&query, &[(&[0xc0, 12], TYPE_A, &[1, 2, 3])]);
        assert_eq!(answer(&msg).unwrap().addrs, vec![], "a 3-byte A record is not an address");
        let mut short = answer_with(&query, &[(&[0xc0, 12], TYPE_A, &[1, 2, 3, 4])]);
        short.truncate(short.len() - 1);
        assert_eq!(answer(&short), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let msg: Vec<u8> = (0..len % 80)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = question(&msg);
            let _ = answer(&msg);
        }
    }

    #[test]
    fn the_local_answer_holds_the_alias_address() {
        let query = encode_query(9, "host.moat.internal", TYPE_A);
        let q = question(&query).unwrap();
        let reply = local_answer(&query, &q, Ipv4Addr::new(10, 254, 254, 5));
        let a = answer(&reply).unwrap();
        assert_eq!(a.addrs, vec![(Ipv4Addr::new(10, 254, 254, 5), 60)]);
        assert_eq!(u16_at(&reply, 0), Some(9));
        let aaaa = encode_query(9, "host.moat.internal", TYPE_AAAA);
        let reply = local_answer(&aaaa, &question(&aaaa).unwrap(), Ipv4Addr::new(10, 254, 254, 5));
        assert_eq!(answer(&reply).unwrap().addrs, vec![]);
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
    }

    #[test]
    fn servfail_keeps_the_id_and_question() {
        let query = encode_query(3, "x.y", TYPE_A);
        let reply = servfail(&query, &question(&query).unwrap());
        assert_eq!(question(&reply).unwrap().name, "x.y");
        assert_eq!(reply[3] & 0x0f, 2);
    }
}
