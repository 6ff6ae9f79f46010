//! The master key on paper: a text an admin can print, keep in a safe and type back in
//! (`reel key export` / `reel key import`, docs/FORMAT.md "Paper key").
//!
//! ```text
//! reel master key v1 fingerprint 0123456789abcdef
//! 1: 0123 4567 89ab cdef  1c2d
//! 2: 0123 4567 89ab cdef  3e4f
//! 3: 0123 4567 89ab cdef  5a6b
//! 4: 0123 4567 89ab cdef  7c8d
//! check: 0123 4567
//! ```
//!
//! Each key line carries 8 bytes of the key and a CRC-16 of its line number and those bytes.
//! A CRC of degree 16 catches every error confined to 16 adjacent bits, so every mistyped hex
//! digit (4 bits) and every swap of two neighbouring digits (8 bits) is caught, and the line
//! is named; the line number in the CRC catches a line typed in the wrong place. The check
//! line (32 bits of blake3 over the whole key) catches what several typos in one line might
//! slip past, and the header's fingerprint is compared with the key's own.
//!
//! Reading is tolerant of what does not change the key (letter case, spaces, blank lines) and
//! exact about everything else. Errors name the line by what the paper prints at its start
//! (`1:` … `4:`, `check:`, the header) and never repeat the key's digits.

use zeroize::Zeroizing;

use super::{Fingerprint, KEY_LEN, MasterKey, hex};
use crate::{Error, Result};

/// Version of the paper layout, printed in the header line.
pub const PAPER_FORMAT: u32 = 1;

/// Key bytes on one key line.
const BYTES_PER_LINE: usize = 8;
/// Key lines.
const LINES: usize = KEY_LEN / BYTES_PER_LINE;
const HEADER_WORDS: [&str; 3] = ["reel", "master", "key"];

/// The text of `master` for paper: header, four key lines, check line, each ending in `\n`.
pub fn to_text(master: &MasterKey) -> String {
    let key = master.as_bytes();
    let mut s = format!(
        "reel master key v{PAPER_FORMAT} fingerprint {}\n",
        master.fingerprint()
    );
    for (i, part) in key.chunks(BYTES_PER_LINE).enumerate() {
        let n = i + 1;
        s.push_str(&format!("{n}:"));
        for pair in part.chunks(2) {
            s.push(' ');
            s.push_str(&hex(pair));
        }
        s.push_str(&format!("  {:04x}\n", line_crc(n, part)));
    }
    let c = whole_check(key);
    s.push_str(&format!("check: {} {}\n", hex(&c[..2]), hex(&c[2..])));
    s
}

/// The master key the text holds. Every mistyped line is named; nothing of the key is
/// repeated in a message.
pub fn parse(text: &str) -> Result<MasterKey> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_ascii_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() != LINES + 2 {
        return Err(bad(format!(
            "the text has {} non-blank lines, and a reel master key has {}: the header line, key lines 1: to {LINES}:, and the check line; compare it with the paper",
            lines.len(),
            LINES + 2
        )));
    }
    let header_fp = parse_header(&lines[0])?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut wrong = Vec::new();
    for n in 1..=LINES {
        let part = &mut key[(n - 1) * BYTES_PER_LINE..n * BYTES_PER_LINE];
        if let Err(why) = parse_key_line(&lines[n], n, part) {
            wrong.push(why);
        }
    }
    let check = parse_check_line(&lines[LINES + 1]);
    if let Err(why) = &check {
        wrong.push(why.clone());
    }
    if !wrong.is_empty() {
        return Err(bad(wrong.join("; ")));
    }
    let check = check.expect("checked above");
    if check != whole_check(&key) {
        return Err(bad(
            "the check line does not match key lines 1: to 4: (each of which matches its own checksum): the check line is mistyped, or a key line has several typos; compare both with the paper".to_string(),
        ));
    }
    let master = MasterKey::from_bytes(*key);
    let fp = master.fingerprint();
    if fp != header_fp {
        return Err(bad(format!(
            "the header line's fingerprint {header_fp} is not the key's fingerprint {fp} (the key digits agree with all their checksums): the header line is mistyped; compare it with the paper"
        )));
    }
    Ok(master)
}

fn bad(msg: String) -> Error {
    Error::Key(format!("the master key text is not right: {msg}"))
}

fn parse_header(line: &str) -> Result<Fingerprint> {
    let expected = || {
        bad(format!(
            "the header line should read `reel master key v{PAPER_FORMAT} fingerprint` and 16 hex digits; compare it with the paper"
        ))
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.len() < 6 || words[..3] != HEADER_WORDS || words[4] != "fingerprint" {
        return Err(expected());
    }
    let version = words[3]
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(expected)?;
    if version != PAPER_FORMAT {
        return Err(bad(format!(
            "the header line names paper format v{version}; this reel reads v{PAPER_FORMAT}: use the reel that wrote it, or the header line is mistyped"
        )));
    }
    Fingerprint::parse(&words[5..].concat()).ok_or_else(|| {
        bad("the header line's fingerprint is not 16 hex digits; compare it with the paper".into())
    })
}

/// Key line `n` into `out` (8 bytes); the error says what is wrong with it, naming it.
fn parse_key_line(line: &str, n: usize, out: &mut [u8]) -> std::result::Result<(), String> {
    let name = format!("key line {n}:");
    let Some((label, rest)) = line.split_once(':') else {
        return Err(format!(
            "{name} should begin with `{n}:` (the {} non-blank line of the text)",
            ordinal(n + 1)
        ));
    };
    if label.trim() != n.to_string() {
        return Err(format!(
            "{name} begins with `{}:` where `{n}:` belongs (the {} non-blank line of the text); lines are in order 1: to {LINES}:",
            label.trim(),
            ordinal(n + 1)
        ));
    }
    let digits =
        hex_digits(rest).map_err(|c| format!("{name} has {c:?}, which is not a hex digit"))?;
    let want = (BYTES_PER_LINE + 2) * 2;
    if digits.len() != want {
        return Err(format!(
            "{name} has {} hex digits where {want} belong ({} of key, 4 of checksum): a digit is missing or doubled",
            digits.len(),
            BYTES_PER_LINE * 2
        ));
    }
    let bytes = Zeroizing::new(from_digits(&digits));
    let crc = u16::from_be_bytes([bytes[BYTES_PER_LINE], bytes[BYTES_PER_LINE + 1]]);
    if crc != line_crc(n, &bytes[..BYTES_PER_LINE]) {
        return Err(format!(
            "{name} is mistyped: its checksum (the last 4 digits) does not match its 16 key digits; compare the line with the paper"
        ));
    }
    out.copy_from_slice(&bytes[..BYTES_PER_LINE]);
    Ok(())
}

fn parse_check_line(line: &str) -> std::result::Result<[u8; 4], String> {
    let name = "the check line";
    let Some((label, rest)) = line.split_once(':') else {
        return Err(format!("{name} should begin with `check:` (the last line)"));
    };
    if label.trim() != "check" {
        return Err(format!(
            "{name} begins with `{}:` where `check:` belongs (the last line)",
            label.trim()
        ));
    }
    let digits =
        hex_digits(rest).map_err(|c| format!("{name} has {c:?}, which is not a hex digit"))?;
    if digits.len() != 8 {
        return Err(format!(
            "{name} has {} hex digits where 8 belong: a digit is missing or doubled",
            digits.len()
        ));
    }
    Ok(from_digits(&digits).try_into().expect("8 digits"))
}

/// The hex digit values of `s`, spaces ignored; the first other character is the error.
fn hex_digits(s: &str) -> std::result::Result<Zeroizing<Vec<u8>>, char> {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len()));
    for c in s.chars() {
        if c.is_whitespace() {
            continue;
        }
        out.push(c.to_digit(16).ok_or(c)? as u8);
    }
    Ok(out)
}

fn from_digits(d: &[u8]) -> Vec<u8> {
    d.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn ordinal(n: usize) -> &'static str {
    ["first", "second", "third", "fourth", "fifth", "sixth"][n - 1]
}

/// CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xffff) of the line number and its bytes.
fn line_crc(n: usize, part: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in std::iter::once(&(n as u8)).chain(part) {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The check line: the first 4 bytes of blake3 over a fixed prefix and the key.
fn whole_check(key: &[u8; KEY_LEN]) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    h.update(b"reel paper key check 1\0").update(key);
    let d = h.finalize();
    d.as_bytes()[..4].try_into().expect("4 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        let mut b = [0u8; KEY_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        MasterKey::from_bytes(b)
    }

    #[test]
    fn the_text_round_trips_for_random_keys_and_tolerates_case_and_spaces() {
        for _ in 0..50 {
            let m = MasterKey::generate().unwrap();
            let text = to_text(&m);
            assert_eq!(text.lines().count(), 6, "{text}");
            assert!(text.contains(&m.fingerprint().to_string()));
            assert_eq!(parse(&text).unwrap().as_bytes(), m.as_bytes());
            let loose: String = text
                .to_uppercase()
                .lines()
                .map(|l| format!("   {}  \r\n\n", l.replace(' ', "  ")))
                .collect();
            assert_eq!(parse(&loose).unwrap().as_bytes(), m.as_bytes());
            let squeezed: String = text
                .lines()
                .map(|l| match l.split_once(':') {
                    Some((a, b)) => format!("{a}:{}\n", b.replace(' ', "")),
                    None => format!("{l}\n"),
                })
                .collect();
            assert_eq!(parse(&squeezed).unwrap().as_bytes(), m.as_bytes());
        }
    }

    /// Which line an error names, as the paper labels it.
    fn named(err: &str) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (label, needle) in [
            ("header", "header line"),
            ("1", "key line 1:"),
            ("2", "key line 2:"),
            ("3", "key line 3:"),
            ("4", "key line 4:"),
            ("check", "check line"),
        ] {
            if err.contains(needle) {
                v.push(label);
            }
        }
        v
    }

    #[test]
    fn every_single_character_typo_in_every_line_is_caught_and_the_line_named() {
        let m = key();
        let text = to_text(&m);
        let lines: Vec<&str> = text.lines().collect();
        let labels = ["header", "1", "2", "3", "4", "check"];
        let mut caught = 0;
        let replacements: Vec<char> = "0123456789abcdefABCDEFgxo: .-".chars().collect();
        for (li, line) in lines.iter().enumerate() {
            let chars: Vec<char> = line.chars().collect();
            let mut variants = Vec::new();
            for pos in 0..chars.len() {
                for &r in &replacements {
                    if r.eq_ignore_ascii_case(&chars[pos]) {
                        continue;
                    }
                    let mut c = chars.clone();
                    c[pos] = r;
                    variants.push((format!("replace {pos} by {r:?}"), c));
                }
                let mut c = chars.clone();
                c.remove(pos);
                variants.push((format!("delete {pos}"), c));
                let mut c = chars.clone();
                c.insert(pos, '7');
                variants.push((format!("insert 7 at {pos}"), c));
            }
            for (what, c) in variants {
                let typed: String = c.into_iter().collect();
                let mut all = lines.clone();
                all[li] = &typed;
                let whole = all.join("\n");
                match parse(&whole) {
                    // Only a change that leaves the key's text as it was may pass: a space
                    // doubled, removed or moved within the digits.
                    Ok(got) => {
                        assert_eq!(got.as_bytes(), m.as_bytes(), "line {li}: {what}: {typed}");
                        let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
                        assert_eq!(norm(&typed), norm(line), "line {li}: {what} passed");
                    }
                    Err(e) => {
                        caught += 1;
                        let e = e.to_string();
                        assert_eq!(
                            named(&e),
                            vec![labels[li]],
                            "line {li}: {what}: {typed}\n{e}"
                        );
                        // The key's digits are never repeated in a message.
                        for l in &lines[1..5] {
                            let digits = l.split_once(':').unwrap().1.replace(' ', "");
                            assert!(!e.contains(&digits[..16]), "{e}");
                        }
                    }
                }
            }
        }
        assert!(caught > 1000, "{caught}");
    }

    /// The example in docs/FORMAT.md and docs/KEYS.md: the layout is pinned, byte for byte.
    #[test]
    fn the_documented_example_reads_and_prints_the_same() {
        let text = "reel master key v1 fingerprint be7efb7156c911de\n\
                    1: 63ed a3b9 93cb 1896  0f1f\n\
                    2: 04f8 c2ae efab a8a7  f142\n\
                    3: ba0b f37d c492 3fa3  c8b6\n\
                    4: 3c47 52f7 7127 30b9  b0f8\n\
                    check: a8df b64f\n";
        let m = parse(text).unwrap();
        assert_eq!(m.fingerprint().to_string(), "be7efb7156c911de");
        assert_eq!(to_text(&m), text);
    }

    #[test]
    fn two_lines_swapped_or_a_line_missing_are_refused() {
        let text = to_text(&key());
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        // Swap the data of lines 2 and 3, keeping their labels.
        let d2 = lines[2].split_once(':').unwrap().1.to_string();
        let d3 = lines[3].split_once(':').unwrap().1.to_string();
        lines[2] = format!("2:{d3}");
        lines[3] = format!("3:{d2}");
        let e = parse(&lines.join("\n")).unwrap_err().to_string();
        assert_eq!(named(&e), vec!["2", "3"], "{e}");
        let mut short: Vec<&str> = text.lines().collect();
        short.remove(3);
        let e = parse(&short.join("\n")).unwrap_err().to_string();
        assert!(e.contains("5 non-blank lines"), "{e}");
    }

    #[test]
    fn a_line_crc_catches_every_single_digit_change_and_neighbour_swap() {
        // The property the paper relies on, over many random lines (the typo test above is
        // one key).
        for seed in 0..2000u32 {
            let mut part = [0u8; BYTES_PER_LINE];
            crate::crypto::random(&mut part).unwrap();
            let n = (seed % 4 + 1) as usize;
            let crc = line_crc(n, &part);
            let digits: Vec<u8> = hex(&part)
                .bytes()
                .map(|c| (c as char).to_digit(16).unwrap() as u8)
                .collect();
            for pos in 0..digits.len() {
                for v in 0..16u8 {
                    if v == digits[pos] {
                        continue;
                    }
                    let mut d = digits.clone();
                    d[pos] = v;
                    assert_ne!(line_crc(n, &from_digits(&d)), crc);
                }
                if pos + 1 < digits.len() && digits[pos] != digits[pos + 1] {
                    let mut d = digits.clone();
                    d.swap(pos, pos + 1);
                    assert_ne!(line_crc(n, &from_digits(&d)), crc);
                }
            }
            for other in 1..=LINES {
                if other != n {
                    assert_ne!(line_crc(other, &part), crc, "line {n} moved to {other}");
                }
            }
        }
    }
}
