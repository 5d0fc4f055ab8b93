//! Arithmetic expansion `$((...))`: 64-bit integer expressions with C precedence, evaluated by precedence
//! climbing. Overflow wraps like bash; division by zero is an error.

/// Evaluates `src`; bare names are variables whose values are parsed as numbers (unset or empty is 0).
pub fn eval(src: &str, var: &dyn Fn(&str) -> String) -> Result<i64, String> {
    let toks = tokens(src)?;
    let mut p = P {
        toks,
        pos: 0,
        var,
        depth: 0,
    };
    let v = p.expr(0)?;
    match p.toks.get(p.pos) {
        None => Ok(v),
        Some(t) => Err(format!(
            "syntax error in expression (error token is \"{t}\")"
        )),
    }
}

const OPS: [&str; 20] = [
    "**", "<=", ">=", "==", "!=", "&&", "||", "<<", ">>", "+", "-", "*", "/", "%", "<", ">", "(",
    ")", "!", "~",
];

fn tokens(src: &str) -> Result<Vec<String>, String> {
    let cs: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(cs[start..i].iter().collect());
        } else {
            let rest: String = cs[i..cs.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err(format!(
                    "syntax error: invalid arithmetic operator (error token is \"{c}\")"
                ));
            };
            out.push(op.to_string());
            i += op.len();
        }
    }
    Ok(out)
}

struct P<'a> {
    toks: Vec<String>,
    pos: usize,
    var: &'a dyn Fn(&str) -> String,
    depth: usize,
}

fn prec(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" => 3,
        "<" | "<=" | ">" | ">=" => 4,
        "<<" | ">>" => 5,
        "+" | "-" => 6,
        "*" | "/" | "%" => 7,
        "**" => 8,
        _ => return None,
    })
}

impl P<'_> {
    fn expr(&mut self, min: u8) -> Result<i64, String> {
        self.depth += 1;
        if self.depth > 200 {
            return Err("expression too deeply nested".into());
        }
        let mut lhs = self.unary()?;
        while let Some(op) = self.toks.get(self.pos).cloned() {
            let Some(p) = prec(&op) else { break };
            if p < min {
                break;
            }
            self.pos += 1;
            // `**` is right-associative, everything else left-associative.
            let rhs = self.expr(if op == "**" { p } else { p + 1 })?;
            lhs = apply(&op, lhs, rhs)?;
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<i64, String> {
        // Prefix operators recurse too (`- - - 1`), so they share the nesting bound.
        self.depth += 1;
        if self.depth > 200 {
            return Err("expression too deeply nested".into());
        }
        let v = self.unary_inner();
        self.depth -= 1;
        v
    }

    fn unary_inner(&mut self) -> Result<i64, String> {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return Err("syntax error: operand expected".into());
        };
        self.pos += 1;
        match t.as_str() {
            "-" => Ok(self.unary()?.wrapping_neg()),
            "+" => self.unary(),
            "!" => Ok(i64::from(self.unary()? == 0)),
            "~" => Ok(!self.unary()?),
            "(" => {
                let v = self.expr(0)?;
                if self.toks.get(self.pos).map(String::as_str) != Some(")") {
                    return Err("missing `)'".into());
                }
                self.pos += 1;
                Ok(v)
            }
            _ if t.starts_with(|c: char| c.is_ascii_digit()) => number(&t),
            _ if t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => {
                let v = (self.var)(&t);
                let v = v.trim();
                if v.is_empty() { Ok(0) } else { number(v) }
            }
            _ => Err(format!(
                "syntax error: operand expected (error token is \"{t}\")"
            )),
        }
    }
}

fn number(s: &str) -> Result<i64, String> {
    let parsed = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        i64::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    parsed.map_err(|_| format!("value too great for base (error token is \"{s}\")"))
}

fn apply(op: &str, a: i64, b: i64) -> Result<i64, String> {
    Ok(match op {
        "+" => a.wrapping_add(b),
        "-" => a.wrapping_sub(b),
        "*" => a.wrapping_mul(b),
        "/" | "%" if b == 0 => return Err("division by 0".into()),
        "/" => a.wrapping_div(b),
        "%" => a.wrapping_rem(b),
        "**" => {
            if b < 0 {
                return Err("exponent less than 0".into());
            }
            a.wrapping_pow(u32::try_from(b).unwrap_or(u32::MAX))
        }
        "<<" => a.wrapping_shl(b as u32),
        ">>" => a.wrapping_shr(b as u32),
        "<" => i64::from(a < b),
        "<=" => i64::from(a <= b),
        ">" => i64::from(a > b),
        ">=" => i64::from(a >= b),
        "==" => i64::from(a == b),
        "!=" => i64::from(a != b),
        "&&" => i64::from(a != 0 && b != 0),
        _ => i64::from(a != 0 || b != 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<i64, String> {
        eval(s, &|n| if n == "x" { "5".into() } else { String::new() })
    }

    #[test]
    fn precedence_and_variables() {
        assert_eq!(ev("1 + 2 * 3"), Ok(7));
        assert_eq!(ev("(1 + 2) * 3"), Ok(9));
        assert_eq!(ev("x * 2 - unset"), Ok(10));
        assert_eq!(ev("2 ** 3 ** 2"), Ok(512));
        assert_eq!(ev("-x + 10 % 4"), Ok(-3));
        assert_eq!(ev("x > 3 && x < 10"), Ok(1));
        assert_eq!(ev("0x10 + 010"), Ok(24));
    }

    #[test]
    fn errors_do_not_panic() {
        assert!(ev("1 / 0").is_err());
        assert!(ev("1 +").is_err());
        assert!(ev("(1").is_err());
        assert!(ev("1 $ 2").is_err());
        assert!(ev(&"(".repeat(10_000)).is_err());
        assert!(ev(&"-".repeat(10_000)).is_err());
        assert_eq!(ev("9223372036854775807 + 1"), Ok(i64::MIN));
    }
}
