//! The predicate language's text to its untyped syntax tree: a lexer over the source and a recursive-descent
//! parser with Go's precedence (`||` below `&&` below the comparisons below `!`). Part of predicate/; called
//! by [`super::compile`] before the tree is bound to a vocabulary. Every error carries the byte position
//! where it was found, so a config error can point at the character.

use super::{Error, ErrorKind, Literal};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// The syntax tree as written, with each node's position; types are checked by binding.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit { lit: Literal, pos: usize },
    Call { name: String, args: Vec<(Literal, usize)>, pos: usize },
    Not { inner: Box<Expr>, pos: usize },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp { op: CmpOp, lhs: Box<Expr>, rhs: Box<Expr>, pos: usize },
}

impl Expr {
    /// Where the expression starts in the source.
    pub fn pos(&self) -> usize {
        match self {
            Expr::Lit { pos, .. } | Expr::Call { pos, .. } | Expr::Not { pos, .. } | Expr::Cmp { pos, .. } => *pos,
            Expr::And(l, _) | Expr::Or(l, _) => l.pos(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Literal),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    Cmp(CmpOp),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Lit(l) => format!("literal {l}"),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::And => "`&&`".into(),
            Tok::Or => "`||`".into(),
            Tok::Not => "`!`".into(),
            Tok::Cmp(op) => format!("`{}`", op.as_str()),
            Tok::End => "the end".into(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |next: u8| bytes.get(i + 1) == Some(&next);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b',' => Tok::Comma,
            b'&' if two(b'&') => Tok::And,
            b'|' if two(b'|') => Tok::Or,
            b'=' if two(b'=') => Tok::Cmp(CmpOp::Eq),
            b'!' if two(b'=') => Tok::Cmp(CmpOp::Ne),
            b'<' if two(b'=') => Tok::Cmp(CmpOp::Le),
            b'>' if two(b'=') => Tok::Cmp(CmpOp::Ge),
            b'!' => Tok::Not,
            b'<' => Tok::Cmp(CmpOp::Lt),
            b'>' => Tok::Cmp(CmpOp::Gt),
            b'"' | b'`' => {
                let (s, end) = string(src, i)?;
                out.push((Tok::Lit(Literal::Str(s.into())), start));
                i = end;
                continue;
            }
            b'0'..=b'9' | b'-' | b'.' => {
                let mut end = i + 1;
                while end < bytes.len() && matches!(bytes[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'_') {
                    end += 1;
                }
                let text = &src[i..end];
                let lit = if text.contains(['.', 'e', 'E']) {
                    text.parse().map(Literal::Float).ok()
                } else {
                    text.parse().map(Literal::Int).ok()
                };
                let lit = lit.ok_or(Error { pos: start, kind: ErrorKind::BadNumber(text.into()) })?;
                out.push((Tok::Lit(lit), start));
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i + 1;
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                    end += 1;
                }
                let word = &src[i..end];
                let tok = match word {
                    "true" => Tok::Lit(Literal::Bool(true)),
                    "false" => Tok::Lit(Literal::Bool(false)),
                    _ => Tok::Ident(word.into()),
                };
                out.push((tok, start));
                i = end;
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(Error { pos: start, kind: ErrorKind::UnexpectedChar(ch) });
            }
        };
        i += if matches!(tok, Tok::And | Tok::Or) || matches!(tok, Tok::Cmp(op) if op.as_str().len() == 2) {
            2
        } else {
            1
        };
        out.push((tok, start));
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

/// A quoted string starting at `start` (`"..."` with Go's simple escapes, or a raw `` `...` ``), and the
/// position just past it.
fn string(src: &str, start: usize) -> Result<(String, usize), Error> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, start + 1 + at + 1)),
            '\\' if quote == '"' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('\\' | '"'))) => out.push(c),
                Some((at2, _)) => return Err(Error { pos: start + 1 + at2, kind: ErrorKind::BadEscape }),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(Error { pos: start, kind: ErrorKind::UnterminatedString })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].0
    }

    fn pos(&self) -> usize {
        self.toks[self.at].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.at].clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn unexpected(&self, expected: &'static str) -> Error {
        Error { pos: self.pos(), kind: ErrorKind::Expected { expected, found: self.peek().describe() } }
    }

    fn or(&mut self) -> Result<Expr, Error> {
        let mut lhs = self.and()?;
        while *self.peek() == Tok::Or {
            self.bump();
            lhs = Expr::Or(Box::new(lhs), Box::new(self.and()?));
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Expr, Error> {
        let mut lhs = self.cmp()?;
        while *self.peek() == Tok::And {
            self.bump();
            lhs = Expr::And(Box::new(lhs), Box::new(self.cmp()?));
        }
        Ok(lhs)
    }

    fn cmp(&mut self) -> Result<Expr, Error> {
        let lhs = self.unary()?;
        if let Tok::Cmp(op) = *self.peek() {
            let pos = self.pos();
            self.bump();
            let rhs = self.unary()?;
            if let Tok::Cmp(_) = self.peek() {
                // `a < b < c` means nothing useful in Go either; say so rather than guess.
                return Err(Error { pos: self.pos(), kind: ErrorKind::ChainedComparison });
            }
            return Ok(Expr::Cmp { op, lhs: Box::new(lhs), rhs: Box::new(rhs), pos });
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if *self.peek() == Tok::Not {
            let pos = self.pos();
            self.bump();
            return Ok(Expr::Not { inner: Box::new(self.unary()?), pos });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let (tok, pos) = self.bump();
        match tok {
            Tok::Lit(lit) => Ok(Expr::Lit { lit, pos }),
            Tok::LParen => {
                let inner = self.or()?;
                if *self.peek() != Tok::RParen {
                    return Err(self.unexpected("`)`"));
                }
                self.bump();
                Ok(inner)
            }
            Tok::Ident(name) => {
                if *self.peek() != Tok::LParen {
                    return Err(self.unexpected("`(` after a function name"));
                }
                self.bump();
                let mut args = Vec::new();
                if *self.peek() == Tok::RParen {
                    self.bump();
                    return Ok(Expr::Call { name, args, pos });
                }
                loop {
                    match self.bump() {
                        (Tok::Lit(l), p) => args.push((l, p)),
                        (t, p) => {
                            return Err(Error {
                                pos: p,
                                kind: ErrorKind::Expected { expected: "a literal argument", found: t.describe() },
                            })
                        }
                    }
                    match self.peek() {
                        Tok::Comma => {
                            self.bump();
                        }
                        Tok::RParen => {
                            self.bump();
                            return Ok(Expr::Call { name, args, pos });
                        }
                        _ => return Err(self.unexpected("`,` or `)`")),
                    }
                }
            }
            other => {
                self.at = self.at.saturating_sub(usize::from(other != Tok::End));
                Err(Error { pos, kind: ErrorKind::Expected { expected: "an expression", found: other.describe() } })
            }
        }
    }
}

/// Parses a predicate to its syntax tree.
pub fn parse(src: &str) -> Result<Expr, Error> {
    let toks = lex(src)?;
    if toks.len() == 1 {
        return Err(Error { pos: 0, kind: ErrorKind::Empty });
    }
    let mut p = Parser { toks, at: 0 };
    let expr = p.or()?;
    if *p.peek() != Tok::End {
        return Err(p.unexpected("`&&`, `||` or the end"));
    }
    Ok(expr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_go() {
        let e = parse("A() || B() && !C() == true").unwrap();
        let Expr::Or(_, rhs) = e else { panic!("|| is lowest: {e:?}") };
        let Expr::And(_, cmp) = *rhs else { panic!("&& below comparison") };
        let Expr::Cmp { lhs, .. } = *cmp else { panic!("comparison") };
        assert!(matches!(*lhs, Expr::Not { .. }), "! binds tighter than ==");
    }

    #[test]
    fn literals_and_positions() {
        let e = parse(r#"F(1, -2.5, "a\"b", `raw\`) "#).unwrap();
        let Expr::Call { args, pos, .. } = e else { panic!() };
        assert_eq!(pos, 0);
        let lits: Vec<_> = args.into_iter().map(|(l, _)| l).collect();
        assert_eq!(
            lits,
            [Literal::Int(1), Literal::Float(-2.5), Literal::Str("a\"b".into()), Literal::Str("raw\\".into())]
        );
    }

    #[test]
    fn syntax_errors_name_the_position() {
        for (src, pos) in [
            ("", 0),
            ("A() >", 5),
            ("A() > 1 > 2", 8),
            ("(A()", 4),
            ("A(B())", 2),
            ("A() $ 1", 4),
            ("A", 1),
            ("A(\"x", 2),
            ("A() B()", 4),
            ("1.2.3 > A()", 0),
        ] {
            let e = parse(src).unwrap_err();
            assert_eq!(e.pos, pos, "{src}: {e}");
        }
    }
}
