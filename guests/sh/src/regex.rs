//! A small regular-expression engine for `grep`: `^ $ . * + ? [...]`, `\` escapes and top-level `|`.
//!
//! Backtracking over a flat list of atoms is enough for what people grep for in a sandbox; the pattern and
//! the line are both bounded by memory, and quantifiers never nest, so matching is polynomial.

#[derive(Debug, Clone)]
enum Atom {
    Any,
    Char(char),
    Class {
        negate: bool,
        items: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

#[derive(Debug, Clone)]
struct Branch {
    anchored_start: bool,
    anchored_end: bool,
    atoms: Vec<(Atom, Rep)>,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Regex {
    branches: Vec<Branch>,
    icase: bool,
}

impl Regex {
    /// Compiles `pat`; `extended` selects ERE (`+ ? |` are operators) over BRE (`\+ \? \|`).
    /// `fixed` treats the whole pattern literally (`grep -F`).
    pub fn new(pat: &str, extended: bool, fixed: bool, icase: bool) -> Regex {
        let cs: Vec<char> = pat.chars().collect();
        if fixed {
            let atoms = cs.iter().map(|&c| (Atom::Char(c), Rep::One)).collect();
            return Regex {
                branches: vec![Branch {
                    anchored_start: false,
                    anchored_end: false,
                    atoms,
                }],
                icase,
            };
        }
        let mut branches = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let mut in_bracket = false;
        while i < cs.len() {
            let c = cs[i];
            if in_bracket {
                if c == ']' {
                    in_bracket = false;
                }
            } else if c == '[' {
                in_bracket = true;
                if matches!(cs.get(i + 1), Some('^')) {
                    i += 1;
                }
                if matches!(cs.get(i + 1), Some(']')) {
                    i += 1;
                }
            } else if c == '\\' {
                if !extended && cs.get(i + 1) == Some(&'|') {
                    branches.push(branch(&cs[start..i], extended));
                    start = i + 2;
                }
                i += 1;
            } else if extended && c == '|' {
                branches.push(branch(&cs[start..i], extended));
                start = i + 1;
            }
            i += 1;
        }
        branches.push(branch(&cs[start.min(cs.len())..], extended));
        // Each quantifier adds a level of recursion when matching; beyond this many, match literally
        // rather than risk the guest's small stack.
        let quantified: usize = branches
            .iter()
            .map(|b| b.atoms.iter().filter(|a| a.1 != Rep::One).count())
            .sum();
        if quantified > 256 {
            return Regex::new(pat, extended, true, icase);
        }
        Regex { branches, icase }
    }

    /// Whether the pattern matches anywhere in `line`.
    pub fn is_match(&self, line: &str) -> bool {
        let s: Vec<char> = line.chars().collect();
        self.find_at(&s, 0).is_some()
    }

    /// The leftmost (then longest) match starting at or after `from`, as char indices `(start, end)`.
    pub fn find_at(&self, s: &[char], from: usize) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for b in &self.branches {
            let size = (b.atoms.len() + 1) * (s.len() + 1);
            let mut memo: Memo = if size <= MEMO_LIMIT && s.len() < u32::MAX as usize - 2 {
                vec![0; size]
            } else {
                Vec::new()
            };
            for start in from..=s.len() {
                if b.anchored_start && start != 0 {
                    break;
                }
                if best.is_some_and(|(bs, _)| start > bs) {
                    break;
                }
                if let Some(end) = self.match_here(b, 0, s, start, &mut memo) {
                    if best.is_none_or(|(bs, be)| start < bs || end > be) {
                        best = Some((start, end));
                    }
                    break;
                }
            }
        }
        best
    }

    fn atom_matches(&self, a: &Atom, c: char) -> bool {
        let eq = |x: char, y: char| {
            if self.icase {
                x.to_lowercase().eq(y.to_lowercase())
            } else {
                x == y
            }
        };
        match a {
            Atom::Any => true,
            Atom::Char(x) => eq(*x, c),
            Atom::Class { negate, items } => {
                let lc = c.to_lowercase().next().unwrap_or(c);
                let uc = c.to_uppercase().next().unwrap_or(c);
                let hit = items.iter().any(|&(lo, hi)| {
                    (lo <= c && c <= hi)
                        || (self.icase && ((lo <= lc && lc <= hi) || (lo <= uc && uc <= hi)))
                });
                hit != *negate
            }
        }
    }

    /// Matches the atoms of `b` from index `idx` at position `at`, greedily, returning where the match
    /// ends. Results are memoised per (atom, position), which keeps patterns like `a*a*a*a*b` polynomial
    /// instead of exponential on long lines.
    fn match_here(
        &self,
        b: &Branch,
        mut idx: usize,
        s: &[char],
        mut at: usize,
        memo: &mut Memo,
    ) -> Option<usize> {
        // Runs of plain atoms are matched in a loop, so recursion depth is bounded by the number of
        // quantified atoms (capped in `new`), not by the pattern's length.
        while let Some((atom, Rep::One)) = b.atoms.get(idx) {
            if at < s.len() && self.atom_matches(atom, s[at]) {
                idx += 1;
                at += 1;
            } else {
                return None;
            }
        }
        let key = idx * (s.len() + 1) + at;
        match memo.get(key) {
            Some(&0) | None => {}
            Some(&1) => return None,
            Some(&end) => return Some(end as usize - 2),
        }
        let result = match b.atoms.get(idx) {
            None => (!b.anchored_end || at == s.len()).then_some(at),
            Some((atom, rep)) => {
                let here = at < s.len() && self.atom_matches(atom, s[at]);
                match rep {
                    Rep::One => here
                        .then(|| self.match_here(b, idx + 1, s, at + 1, memo))
                        .flatten(),
                    Rep::Opt => here
                        .then(|| self.match_here(b, idx + 1, s, at + 1, memo))
                        .flatten()
                        .or_else(|| self.match_here(b, idx + 1, s, at, memo)),
                    Rep::Star | Rep::Plus => {
                        let mut n = 0;
                        while at + n < s.len() && self.atom_matches(atom, s[at + n]) {
                            n += 1;
                        }
                        let min = usize::from(*rep == Rep::Plus);
                        if n < min {
                            None
                        } else {
                            (min..=n)
                                .rev()
                                .find_map(|k| self.match_here(b, idx + 1, s, at + k, memo))
                        }
                    }
                }
            }
        };
        if let Some(slot) = memo.get_mut(key) {
            *slot = result.map_or(1, |end| end as u32 + 2);
        }
        result
    }
}

/// Memo of `match_here` results indexed by atom and position: 0 unknown, 1 no match, `end + 2` a match.
type Memo = Vec<u32>;

/// Largest memo allocated (entries of 4 bytes); longer lines match without memoisation.
const MEMO_LIMIT: usize = 1 << 21;

fn branch(cs: &[char], extended: bool) -> Branch {
    let mut b = Branch {
        anchored_start: false,
        anchored_end: false,
        atoms: Vec::new(),
    };
    let mut i = 0;
    if cs.first() == Some(&'^') {
        b.anchored_start = true;
        i = 1;
    }
    let mut end = cs.len();
    if end > i && cs[end - 1] == '$' && (end < 2 || cs[end - 2] != '\\') {
        b.anchored_end = true;
        end -= 1;
    }
    while i < end {
        let c = cs[i];
        let atom = match c {
            '.' => Atom::Any,
            '[' => {
                let (atom, next) = class(cs, i + 1, end);
                i = next;
                b.atoms.push((atom, Rep::One));
                apply_rep(&mut b, cs, &mut i, end, extended);
                continue;
            }
            '\\' if i + 1 < end => {
                i += 1;
                match cs[i] {
                    '+' | '?' if !extended => {
                        if let Some(last) = b.atoms.last_mut() {
                            last.1 = if cs[i] == '+' { Rep::Plus } else { Rep::Opt };
                        }
                        i += 1;
                        continue;
                    }
                    'd' => Atom::Class {
                        negate: false,
                        items: vec![('0', '9')],
                    },
                    'w' => Atom::Class {
                        negate: false,
                        items: vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')],
                    },
                    's' => Atom::Class {
                        negate: false,
                        items: vec![(' ', ' '), ('\t', '\t')],
                    },
                    'n' => Atom::Char('\n'),
                    't' => Atom::Char('\t'),
                    other => Atom::Char(other),
                }
            }
            '*' if b.atoms.is_empty() => Atom::Char('*'),
            '(' | ')' if extended => {
                // Groups are not supported; ignoring the parentheses keeps simple `(foo)` patterns working.
                i += 1;
                continue;
            }
            _ => Atom::Char(c),
        };
        i += 1;
        b.atoms.push((atom, Rep::One));
        apply_rep(&mut b, cs, &mut i, end, extended);
    }
    b
}

fn apply_rep(b: &mut Branch, cs: &[char], i: &mut usize, end: usize, extended: bool) {
    while *i < end {
        let rep = match cs[*i] {
            '*' => Rep::Star,
            '+' if extended => Rep::Plus,
            '?' if extended => Rep::Opt,
            _ => return,
        };
        if let Some(last) = b.atoms.last_mut() {
            last.1 = if last.1 == Rep::One { rep } else { Rep::Star };
        }
        *i += 1;
    }
}

/// Parses a bracket expression from just after `[`; returns the atom and the index after `]`.
fn class(cs: &[char], mut i: usize, end: usize) -> (Atom, usize) {
    let start = i;
    let negate = cs.get(i) == Some(&'^');
    if negate {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    while i < end {
        let c = cs[i];
        if c == ']' && !first {
            return (Atom::Class { negate, items }, i + 1);
        }
        first = false;
        if c == '[' && cs.get(i + 1) == Some(&':') {
            let rest: String = cs[i..end].iter().collect();
            let named: &[(&str, &[(char, char)])] = &[
                ("[:digit:]", &[('0', '9')]),
                ("[:alpha:]", &[('a', 'z'), ('A', 'Z')]),
                ("[:alnum:]", &[('a', 'z'), ('A', 'Z'), ('0', '9')]),
                ("[:upper:]", &[('A', 'Z')]),
                ("[:lower:]", &[('a', 'z')]),
                ("[:space:]", &[(' ', ' '), ('\t', '\r')]),
            ];
            if let Some((name, ranges)) = named.iter().find(|(n, _)| rest.starts_with(n)) {
                items.extend_from_slice(ranges);
                i += name.chars().count();
                continue;
            }
        }
        if i + 2 < end && cs[i + 1] == '-' && cs[i + 2] != ']' {
            items.push((c, cs[i + 2]));
            i += 3;
        } else {
            items.push((c, c));
            i += 1;
        }
    }
    // Unterminated: treat `[` as a literal and go on after it.
    (Atom::Char('['), start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Regex::new(p, false, false, false).is_match(s)
    }

    #[test]
    fn basic_regex() {
        assert!(m("ell", "hello"));
        assert!(m("^he", "hello"));
        assert!(!m("^el", "hello"));
        assert!(m("lo$", "hello"));
        assert!(m("h.l*o", "hello"));
        assert!(m("[0-9][0-9]*", "a42"));
        assert!(!m("[^a-z]", "abc"));
        assert!(m("^$", ""));
        assert!(m("a\\|z", "xyz"));
        assert!(m("[[:digit:]]", "x1"));
        let s: Vec<char> = "xaaay".chars().collect();
        assert_eq!(
            Regex::new("a*", false, false, false).find_at(&s, 0),
            Some((0, 0))
        );
        assert_eq!(
            Regex::new("aa*", false, false, false).find_at(&s, 0),
            Some((1, 4))
        );
        assert_eq!(
            Regex::new("y$", false, false, false).find_at(&s, 0),
            Some((4, 5))
        );
    }

    #[test]
    fn extended_and_options() {
        assert!(Regex::new("ab+c", true, false, false).is_match("abbc"));
        assert!(!Regex::new("ab+c", true, false, false).is_match("ac"));
        assert!(Regex::new("colou?r", true, false, false).is_match("color"));
        assert!(Regex::new("cat|dog", true, false, false).is_match("hotdog"));
        assert!(Regex::new("HELLO", false, false, true).is_match("say hello"));
        assert!(Regex::new("a.c", false, true, false).is_match("xa.c"));
        let huge = "a".repeat(200_000);
        assert!(Regex::new(&huge, false, false, false).is_match(&huge));
        assert!(!Regex::new(&"a*".repeat(1000), false, false, false).is_match("aaa"));
        let long = "a".repeat(500);
        assert!(!Regex::new("a*a*a*a*a*a*a*a*a*a*b", false, false, false).is_match(&long));
        assert!(!Regex::new("a.c", false, true, false).is_match("abc"));
    }
}
