//! Brace expansion: `a{b,c}d` → `abd acd`, `{1..3}` → `1 2 3`, as in `mkdir -p src/{lib,bin}`.
//!
//! It runs on the word before any other expansion and only looks at unquoted braces, like bash. The number
//! of words produced is capped so `{1..9}{1..9}{1..9}...` cannot exhaust the guest's memory.

use crate::lexer::{Part, Word};

/// Most words one brace expression may produce.
const MAX_WORDS: usize = 100_000;

/// A word flattened into characters (with quotedness) and opaque expansions.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Char(char, bool),
    Other(Part),
}

fn flatten(w: &Word) -> Vec<Piece> {
    let mut out = Vec::new();
    for p in &w.parts {
        match p {
            // An empty quoted literal (`''`) still makes a word, so it is kept as an opaque piece.
            Part::Lit { text, .. } if text.is_empty() => out.push(Piece::Other(p.clone())),
            Part::Lit { text, quoted } => out.extend(text.chars().map(|c| Piece::Char(c, *quoted))),
            other => out.push(Piece::Other(other.clone())),
        }
    }
    out
}

fn rebuild(pieces: &[Piece]) -> Word {
    let mut parts: Vec<Part> = Vec::new();
    for p in pieces {
        match p {
            Piece::Char(c, q) => match parts.last_mut() {
                Some(Part::Lit { text, quoted }) if quoted == q => text.push(*c),
                _ => parts.push(Part::Lit {
                    text: c.to_string(),
                    quoted: *q,
                }),
            },
            Piece::Other(part) => parts.push(part.clone()),
        }
    }
    Word { parts }
}

fn is(p: &Piece, c: char) -> bool {
    *p == Piece::Char(c, false)
}

/// Finds the first brace expression: (open, close, comma positions at depth 1).
fn find(ps: &[Piece]) -> Option<(usize, usize, Vec<usize>)> {
    for open in 0..ps.len() {
        if !is(&ps[open], '{') {
            continue;
        }
        let mut depth = 0;
        let mut commas = Vec::new();
        for (k, p) in ps.iter().enumerate().skip(open + 1) {
            if is(p, '{') {
                depth += 1;
            } else if is(p, '}') {
                if depth == 0 {
                    let seq = commas.is_empty() && sequence(&ps[open + 1..k]).is_some();
                    if !commas.is_empty() || seq {
                        return Some((open, k, commas));
                    }
                    break;
                }
                depth -= 1;
            } else if is(p, ',') && depth == 0 {
                commas.push(k);
            }
        }
    }
    None
}

/// The items of a `{a..b}` sequence (integers or single letters), if `inner` is one.
fn sequence(inner: &[Piece]) -> Option<Vec<String>> {
    let text: String = inner
        .iter()
        .map(|p| match p {
            Piece::Char(c, false) => Some(*c),
            _ => None,
        })
        .collect::<Option<String>>()?;
    let (a, b) = text.split_once("..")?;
    if let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>()) {
        if x.abs_diff(y) as usize >= MAX_WORDS {
            return None;
        }
        let items: Vec<String> = if x <= y {
            (x..=y).map(|n| n.to_string()).collect()
        } else {
            (y..=x).rev().map(|n| n.to_string()).collect()
        };
        return Some(items);
    }
    let (mut ca, mut cb) = (a.chars(), b.chars());
    match (ca.next(), ca.next(), cb.next(), cb.next()) {
        (Some(x), None, Some(y), None) if x.is_ascii_alphabetic() && y.is_ascii_alphabetic() => {
            let items = if x <= y {
                (x..=y).map(String::from).collect()
            } else {
                (y..=x).rev().map(String::from).collect()
            };
            Some(items)
        }
        _ => None,
    }
}

/// Expands all brace expressions of a word; a word without any comes back unchanged.
pub fn expand(w: &Word) -> Vec<Word> {
    let first = flatten(w);
    if find(&first).is_none() {
        return vec![w.clone()];
    }
    let mut done = Vec::new();
    let mut todo = vec![first];
    while let Some(ps) = todo.pop() {
        let Some((open, close, commas)) = find(&ps) else {
            done.push(rebuild(&ps));
            continue;
        };
        let alternatives: Vec<Vec<Piece>> = if commas.is_empty() {
            sequence(&ps[open + 1..close])
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.chars().map(|c| Piece::Char(c, true)).collect())
                .collect()
        } else {
            let mut bounds = vec![open];
            bounds.extend(&commas);
            bounds.push(close);
            bounds
                .windows(2)
                .map(|w| ps[w[0] + 1..w[1]].to_vec())
                .collect()
        };
        // Pushed in reverse so that popping keeps the left-to-right order.
        for alt in alternatives.into_iter().rev() {
            if done.len() + todo.len() >= MAX_WORDS {
                break;
            }
            let mut v = ps[..open].to_vec();
            v.extend(alt);
            v.extend_from_slice(&ps[close + 1..]);
            todo.push(v);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::{Tok, lex};

    fn words(src: &str) -> Vec<String> {
        let toks = lex(src).unwrap();
        let Some(Tok::Word(w)) = toks.first() else {
            panic!("word expected")
        };
        expand(w)
            .iter()
            .map(|w| {
                w.parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit { text, .. } => text.clone(),
                        _ => "$".into(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn lists_sequences_and_nesting() {
        assert_eq!(words("a{b,c}d"), ["abd", "acd"]);
        assert_eq!(words("{1..3}"), ["1", "2", "3"]);
        assert_eq!(words("{c..a}"), ["c", "b", "a"]);
        assert_eq!(words("x{a,b{1,2}}"), ["xa", "xb1", "xb2"]);
        assert_eq!(words("{a,b}{1,2}"), ["a1", "a2", "b1", "b2"]);
        assert_eq!(words("src/{lib,bin}/"), ["src/lib/", "src/bin/"]);
    }

    #[test]
    fn non_expressions_stay() {
        assert_eq!(words("{a}"), ["{a}"]);
        assert_eq!(words("'{a,b}'"), ["{a,b}"]);
        assert_eq!(words("{}"), ["{}"]);
        assert_eq!(words("a{b,c"), ["a{b,c"]);
        assert_eq!(words("{,x}"), ["", "x"]);
    }

    #[test]
    fn output_is_bounded() {
        assert!(words("{1..9}{1..9}{1..9}{1..9}{1..9}{1..9}{1..9}").len() <= MAX_WORDS);
        assert_eq!(words("{1..999999999}"), ["{1..999999999}"]);
    }
}
