//! Pathname expansion (`*`, `?`, `[...]`) and the wildcard matcher behind it.
//!
//! Patterns use `\` to escape characters that came from quotes, so `"*".txt` stays literal.

use crate::exec::Shell;

/// Whether `pat` contains an unescaped wildcard.
pub fn has_wildcards(pat: &str) -> bool {
    let mut escaped = false;
    for c in pat.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// Removes the escaping backslashes from a pattern.
pub fn unescape(pat: &str) -> String {
    let mut out = String::with_capacity(pat.len());
    let mut escaped = false;
    for c in pat.chars() {
        if c == '\\' && !escaped {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// Matches a bracket expression starting after `[`; returns (matched, index after `]`) or `None` when the
/// bracket is unterminated (then `[` is an ordinary character).
fn bracket(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if p[i] == '\\' && i + 1 < p.len() {
            i += 1;
            p[i]
        } else {
            p[i]
        };
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if lo <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Whether the whole of `s` matches the wildcard pattern `pat`.
pub fn matches(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`: linear-ish and no recursion.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match bracket(&p[pi + 1..], s[si]) {
                Some((true, n)) => Some(pi + 1 + n),
                Some((false, _)) => None,
                None => (s[si] == '[').then_some(pi + 1),
            },
            Some('\\') if pi + 1 < p.len() => (p[pi + 1] == s[si]).then_some(pi + 2),
            Some(&c) => (c == s[si]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                pi = next;
                si += 1;
            }
            None => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Expands a pattern against the file system, returning the sorted matches (empty when none match).
pub fn glob(sh: &Shell, pat: &str) -> Vec<String> {
    let absolute = pat.starts_with('/');
    let mut cands = vec![if absolute {
        "/".to_string()
    } else {
        String::new()
    }];
    let comps: Vec<&str> = pat.split('/').filter(|c| !c.is_empty()).collect();
    for (n, comp) in comps.iter().enumerate() {
        let last = n + 1 == comps.len();
        let mut next = Vec::new();
        for cand in &cands {
            if has_wildcards(comp) {
                let dir = if cand.is_empty() { "." } else { cand.as_str() };
                let Ok(rd) = std::fs::read_dir(sh.host_path(dir)) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| last || e.file_type().is_ok_and(|t| t.is_dir() || t.is_symlink()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        (!name.starts_with('.') || comp.starts_with('.')) && matches(comp, name)
                    })
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|name| join(cand, &name)));
            } else {
                let p = join(cand, &unescape(comp));
                if std::fs::symlink_metadata(sh.host_path(&p)).is_ok() {
                    next.push(p);
                }
            }
        }
        cands = next;
    }
    if pat.ends_with('/') {
        for c in &mut cands {
            c.push('/');
        }
    }
    cands
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matching() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "a.txt.bak"));
        assert!(matches("a?c", "abc"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[!a-c]x", "bx"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("\\*", "*"));
        assert!(!matches("\\*", "a"));
        assert!(matches("[", "["));
        assert!(matches("", ""));
    }

    #[test]
    fn wildcard_detection_respects_escapes() {
        assert!(has_wildcards("a*"));
        assert!(!has_wildcards("a\\*"));
        assert_eq!(unescape("a\\*b"), "a*b");
    }
}
