//! A small expression language shared by everything in a config that decides from a request's or a window's
//! facts: a circuit breaker's condition (`NetworkErrorRatio() > 0.5`, `LatencyAtQuantileMS(50.0) > 50`) and a
//! backend's failover predicate (`(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2`). A leaf of
//! the module graph: the model checks a predicate when a value arrives, the table keeps the bound form, and
//! the hot path only evaluates it.
//!
//! The language is Vulcand's (Go expression syntax): calls of named functions whose arguments are literals
//! (ints, floats, `"strings"` or `` `raw strings` ``, `true`/`false`), the comparisons `== != < <= > >=`,
//! `&&`, `||`, `!` and parentheses. Text is [`parse`]d into an untyped tree, then bound against a
//! vocabulary the caller gives ([`Signature`]: a name, argument types, a result type and the caller's own
//! function value), so an unknown function, a wrong number or type of arguments, or a comparison between
//! things that cannot be compared is refused at config time with the byte position it was found at. The bound
//! [`Predicate`] evaluates against the caller's [`Env`] without allocating: the tree is walked in place and
//! values are `Copy` or borrowed.
//!
//! Ints compare with floats as floats; an int literal passes where a float argument is expected
//! (`LatencyAtQuantileMS(50)`); strings compare with each other (bytewise), booleans with `==` and `!=`.

#![forbid(unsafe_code)]

mod parse;

pub use parse::{parse, CmpOp, Expr};

use std::fmt;

/// The type of an argument, a function's result or a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Int,
    Float,
    Str,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Str => "string",
            Type::Bool => "bool",
        })
    }
}

/// A literal as written (a function argument or an operand).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Bool(bool),
}

impl Literal {
    pub fn ty(&self) -> Type {
        match self {
            Literal::Int(_) => Type::Int,
            Literal::Float(_) => Type::Float,
            Literal::Str(_) => Type::Str,
            Literal::Bool(_) => Type::Bool,
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Literal::Int(i) => Value::Int(*i),
            Literal::Float(f) => Value::Float(*f),
            Literal::Str(s) => Value::Str(s),
            Literal::Bool(b) => Value::Bool(*b),
        }
    }

    /// The argument as an int (what a function declared `Int` receives).
    pub fn as_int(&self) -> i64 {
        match self {
            Literal::Int(i) => *i,
            Literal::Float(f) => *f as i64,
            _ => 0,
        }
    }

    /// The argument as a float (what a function declared `Float` receives; ints are widened at bind time).
    pub fn as_float(&self) -> f64 {
        match self {
            Literal::Int(i) => *i as f64,
            Literal::Float(f) => *f,
            _ => 0.0,
        }
    }

    /// The argument as a string (what a function declared `Str` receives).
    pub fn as_str(&self) -> &str {
        match self {
            Literal::Str(s) => s,
            _ => "",
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A value met while evaluating: a literal's or a function's result. `Copy`, strings borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
}

/// One function of a vocabulary: its name in the language, its argument types, its result type, and the
/// caller's handle for it (typically a fieldless enum), handed back to [`Env::call`].
#[derive(Debug, Clone, Copy)]
pub struct Signature<F> {
    pub name: &'static str,
    pub args: &'static [Type],
    pub result: Type,
    pub func: F,
}

/// What a bound predicate is evaluated against: the caller's facts (a window's statistics, one attempt's
/// outcome). `args` are the call's literals, already of the declared types.
pub trait Env<F> {
    fn call<'a>(&'a self, func: F, args: &'a [Literal]) -> Value<'a>;
}

/// Why a predicate was refused, and where (a byte offset into its text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at position {pos}: {kind}")]
pub struct Error {
    pub pos: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("empty predicate")]
    Empty,
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    #[error("unterminated string")]
    UnterminatedString,
    #[error("unknown escape in a string (\\n, \\t, \\\\ and \\\" are known)")]
    BadEscape,
    #[error("`{0}` is not a number")]
    BadNumber(String),
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    #[error("comparisons do not chain; use `&&`")]
    ChainedComparison,
    #[error("unknown function `{name}` (known: {known})")]
    UnknownFunction { name: String, known: String },
    #[error("`{name}` takes {expected} argument(s), got {got}")]
    Arity { name: String, expected: usize, got: usize },
    #[error("argument {index} of `{name}` must be {expected}, got {got}")]
    ArgType { name: String, index: usize, expected: Type, got: Type },
    #[error("cannot compare {lhs} with {rhs} using `{op}`")]
    Compare { lhs: Type, rhs: Type, op: &'static str },
    #[error("expected a bool here, found {0}")]
    NotBool(Type),
}

/// How a comparison compares, decided at bind time from its operands' types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpKind {
    Int,
    Float,
    Str,
    Bool,
}

#[derive(Debug, Clone)]
enum Node<F> {
    Lit(Literal),
    Call { func: F, args: Box<[Literal]> },
    Not(Box<Node<F>>),
    And(Box<Node<F>>, Box<Node<F>>),
    Or(Box<Node<F>>, Box<Node<F>>),
    Cmp { op: CmpOp, kind: CmpKind, lhs: Box<Node<F>>, rhs: Box<Node<F>> },
}

/// A predicate bound to a vocabulary: every function known, every type checked, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Predicate<F> {
    root: Node<F>,
    text: Box<str>,
}

/// Parses and binds in one step: what a config check calls.
pub fn compile<F: Copy>(src: &str, vocabulary: &[Signature<F>]) -> Result<Predicate<F>, Error> {
    bind(&parse(src)?, src, vocabulary)
}

/// Binds a parsed tree to a vocabulary; the result must be a bool.
pub fn bind<F: Copy>(expr: &Expr, src: &str, vocabulary: &[Signature<F>]) -> Result<Predicate<F>, Error> {
    let (root, ty) = bind_node(expr, vocabulary)?;
    if ty != Type::Bool {
        return Err(Error { pos: expr.pos(), kind: ErrorKind::NotBool(ty) });
    }
    Ok(Predicate { root, text: src.into() })
}

fn bind_node<F: Copy>(expr: &Expr, vocabulary: &[Signature<F>]) -> Result<(Node<F>, Type), Error> {
    let want_bool = |e: &Expr| -> Result<Node<F>, Error> {
        let (n, t) = bind_node(e, vocabulary)?;
        if t != Type::Bool {
            return Err(Error { pos: e.pos(), kind: ErrorKind::NotBool(t) });
        }
        Ok(n)
    };
    Ok(match expr {
        Expr::Lit { lit, .. } => (Node::Lit(lit.clone()), lit.ty()),
        Expr::Call { name, args, pos } => {
            let Some(sig) = vocabulary.iter().find(|s| s.name == name) else {
                let known = vocabulary.iter().map(|s| format!("{}()", s.name)).collect::<Vec<_>>().join(", ");
                return Err(Error { pos: *pos, kind: ErrorKind::UnknownFunction { name: name.clone(), known } });
            };
            if sig.args.len() != args.len() {
                return Err(Error {
                    pos: *pos,
                    kind: ErrorKind::Arity { name: name.clone(), expected: sig.args.len(), got: args.len() },
                });
            }
            let mut bound = Vec::with_capacity(args.len());
            for (index, ((lit, at), want)) in args.iter().zip(sig.args).enumerate() {
                let lit = match (lit, want) {
                    (l, w) if l.ty() == *w => l.clone(),
                    (Literal::Int(i), Type::Float) => Literal::Float(*i as f64),
                    (l, w) => {
                        return Err(Error {
                            pos: *at,
                            kind: ErrorKind::ArgType {
                                name: name.clone(),
                                index: index + 1,
                                expected: *w,
                                got: l.ty(),
                            },
                        })
                    }
                };
                bound.push(lit);
            }
            (Node::Call { func: sig.func, args: bound.into_boxed_slice() }, sig.result)
        }
        Expr::Not { inner, .. } => (Node::Not(Box::new(want_bool(inner)?)), Type::Bool),
        Expr::And(l, r) => (Node::And(Box::new(want_bool(l)?), Box::new(want_bool(r)?)), Type::Bool),
        Expr::Or(l, r) => (Node::Or(Box::new(want_bool(l)?), Box::new(want_bool(r)?)), Type::Bool),
        Expr::Cmp { op, lhs, rhs, pos } => {
            let (l, lt) = bind_node(lhs, vocabulary)?;
            let (r, rt) = bind_node(rhs, vocabulary)?;
            let ordered = !matches!(op, CmpOp::Eq | CmpOp::Ne);
            let kind = match (lt, rt) {
                (Type::Int, Type::Int) => CmpKind::Int,
                (Type::Int | Type::Float, Type::Int | Type::Float) => CmpKind::Float,
                (Type::Str, Type::Str) => CmpKind::Str,
                (Type::Bool, Type::Bool) if !ordered => CmpKind::Bool,
                _ => return Err(Error { pos: *pos, kind: ErrorKind::Compare { lhs: lt, rhs: rt, op: op.as_str() } }),
            };
            (Node::Cmp { op: *op, kind, lhs: Box::new(l), rhs: Box::new(r) }, Type::Bool)
        }
    })
}

impl<F: Copy> Predicate<F> {
    /// Evaluates against `env`. Allocation-free. A function that answers with another type than its
    /// signature declared (the caller's bug) makes its comparison false rather than panic.
    pub fn eval(&self, env: &impl Env<F>) -> bool {
        truth(&self.root, env)
    }

    /// The text the predicate was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every function the predicate calls, with its arguments, in source order: lets a caller size what it
    /// must record (which latency quantiles a breaker's window needs) at build time.
    pub fn calls(&self) -> Vec<(F, &[Literal])> {
        fn walk<'a, F: Copy>(n: &'a Node<F>, out: &mut Vec<(F, &'a [Literal])>) {
            match n {
                Node::Lit(_) => {}
                Node::Call { func, args } => out.push((*func, args)),
                Node::Not(i) => walk(i, out),
                Node::And(l, r) | Node::Or(l, r) | Node::Cmp { lhs: l, rhs: r, .. } => {
                    walk(l, out);
                    walk(r, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

fn value<'a, F: Copy>(n: &'a Node<F>, env: &'a impl Env<F>) -> Value<'a> {
    match n {
        Node::Lit(l) => l.value(),
        Node::Call { func, args } => env.call(*func, args),
        other => Value::Bool(truth(other, env)),
    }
}

fn truth<F: Copy>(n: &Node<F>, env: &impl Env<F>) -> bool {
    match n {
        Node::Not(i) => !truth(i, env),
        Node::And(l, r) => truth(l, env) && truth(r, env),
        Node::Or(l, r) => truth(l, env) || truth(r, env),
        Node::Cmp { op, kind, lhs, rhs } => compare(*op, *kind, value(lhs, env), value(rhs, env)),
        other => matches!(value(other, env), Value::Bool(true)),
    }
}

fn compare(op: CmpOp, kind: CmpKind, l: Value<'_>, r: Value<'_>) -> bool {
    use std::cmp::Ordering;
    let float = |v: Value<'_>| match v {
        Value::Int(i) => Some(i as f64),
        Value::Float(f) => Some(f),
        _ => None,
    };
    let ord: Option<Ordering> = match (kind, l, r) {
        (CmpKind::Int, Value::Int(a), Value::Int(b)) => Some(a.cmp(&b)),
        (CmpKind::Int | CmpKind::Float, a, b) => match (float(a), float(b)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (CmpKind::Str, Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
        (CmpKind::Bool, Value::Bool(a), Value::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    };
    // NaN or a mistyped answer: nothing holds, not even `!=`, so a broken fact never trips or retries.
    let Some(ord) = ord else { return false };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum F {
        NetworkErrorRatio,
        Latency,
        CodeRatio,
        IsNetworkError,
        ResponseCode,
        Attempts,
        Method,
    }

    const VOCAB: &[Signature<F>] = &[
        Signature { name: "NetworkErrorRatio", args: &[], result: Type::Float, func: F::NetworkErrorRatio },
        Signature { name: "LatencyAtQuantileMS", args: &[Type::Float], result: Type::Int, func: F::Latency },
        Signature {
            name: "ResponseCodeRatio",
            args: &[Type::Int, Type::Int, Type::Int, Type::Int],
            result: Type::Float,
            func: F::CodeRatio,
        },
        Signature { name: "IsNetworkError", args: &[], result: Type::Bool, func: F::IsNetworkError },
        Signature { name: "ResponseCode", args: &[], result: Type::Int, func: F::ResponseCode },
        Signature { name: "Attempts", args: &[], result: Type::Int, func: F::Attempts },
        Signature { name: "RequestMethod", args: &[], result: Type::Str, func: F::Method },
    ];

    struct Facts {
        net_ratio: f64,
        p50: i64,
        code_ratio: f64,
        net_error: bool,
        code: i64,
        attempts: i64,
        method: &'static str,
    }

    impl Env<F> for Facts {
        fn call<'a>(&'a self, func: F, args: &'a [Literal]) -> Value<'a> {
            match func {
                F::NetworkErrorRatio => Value::Float(self.net_ratio),
                F::Latency => Value::Int(if args[0].as_float() == 50.0 { self.p50 } else { 0 }),
                F::CodeRatio => {
                    assert_eq!(args.iter().map(Literal::as_int).collect::<Vec<_>>(), [500, 600, 0, 600]);
                    Value::Float(self.code_ratio)
                }
                F::IsNetworkError => Value::Bool(self.net_error),
                F::ResponseCode => Value::Int(self.code),
                F::Attempts => Value::Int(self.attempts),
                F::Method => Value::Str(self.method),
            }
        }
    }

    fn facts() -> Facts {
        Facts { net_ratio: 0.0, p50: 10, code_ratio: 0.0, net_error: false, code: 200, attempts: 1, method: "GET" }
    }

    fn holds(src: &str, f: &Facts) -> bool {
        compile(src, VOCAB).unwrap_or_else(|e| panic!("{src}: {e}")).eval(f)
    }

    #[test]
    fn breaker_conditions_read_the_window() {
        let mut f = facts();
        assert!(!holds("NetworkErrorRatio() > 0.5", &f));
        f.net_ratio = 0.6;
        assert!(holds("NetworkErrorRatio() > 0.5", &f));
        assert!(!holds("LatencyAtQuantileMS(50.0) > 50", &f));
        f.p50 = 51;
        assert!(holds("LatencyAtQuantileMS(50) > 50", &f), "an int passes as a float argument");
        f.code_ratio = 0.7;
        assert!(holds("ResponseCodeRatio(500, 600, 0, 600) > 0.5", &f));
        assert!(holds("NetworkErrorRatio() > 0.9 || ResponseCodeRatio(500, 600, 0, 600) >= 0.7", &f));
        assert!(!holds("NetworkErrorRatio() > 0.9 && ResponseCodeRatio(500, 600, 0, 600) >= 0.7", &f));
    }

    #[test]
    fn failover_predicates_read_the_attempt() {
        let src = r#"(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"#;
        let mut f = facts();
        assert!(!holds(src, &f));
        f.net_error = true;
        assert!(holds(src, &f));
        f.attempts = 3;
        assert!(!holds(src, &f));
        f = facts();
        f.code = 503;
        assert!(holds(src, &f));
        assert!(holds(r#"RequestMethod() == "GET""#, &f));
        assert!(!holds(r#"RequestMethod() != "GET""#, &f));
        assert!(holds(r#"!IsNetworkError() && !(Attempts() > 1)"#, &f));
        assert!(holds("IsNetworkError() == false", &f));
    }

    #[test]
    fn nan_never_holds() {
        let mut f = facts();
        f.net_ratio = f64::NAN;
        assert!(!holds("NetworkErrorRatio() > 0.5", &f));
        assert!(!holds("NetworkErrorRatio() <= 0.5", &f));
        assert!(!holds("NetworkErrorRatio() != 0.5", &f));
    }

    #[test]
    fn binding_refuses_what_cannot_run_and_names_the_position() {
        let cases: &[(&str, usize, &str)] = &[
            ("Nope() > 1", 0, "unknown function `Nope`"),
            ("NetworkErrorRatio(1) > 1", 0, "takes 0 argument(s), got 1"),
            ("LatencyAtQuantileMS(\"x\") > 1", 20, "argument 1 of `LatencyAtQuantileMS` must be float, got string"),
            ("ResponseCodeRatio(500, 600.0, 0, 600) > 1", 23, "argument 2"),
            ("Attempts() == \"x\"", 11, "cannot compare int with string"),
            ("IsNetworkError() < true", 17, "cannot compare bool with bool using `<`"),
            ("NetworkErrorRatio()", 0, "expected a bool here, found float"),
            ("Attempts() > 1 && ResponseCode()", 18, "expected a bool here, found int"),
            ("!Attempts()", 1, "expected a bool here"),
        ];
        for (src, pos, msg) in cases {
            let e = compile(src, VOCAB).unwrap_err();
            assert_eq!(e.pos, *pos, "{src}: {e}");
            assert!(e.to_string().contains(msg), "{src}: {e}");
        }
        let e = compile("Nope()", VOCAB).unwrap_err();
        assert!(e.to_string().contains("NetworkErrorRatio()"), "lists what is known: {e}");
    }

    #[test]
    fn calls_are_listed_for_the_caller_to_size_its_records() {
        let p = compile("LatencyAtQuantileMS(99) > 5 || LatencyAtQuantileMS(50.0) > 1", VOCAB).unwrap();
        let qs: Vec<f64> = p.calls().iter().map(|(_, a)| a[0].as_float()).collect();
        assert_eq!(qs, [99.0, 50.0]);
        assert_eq!(p.text(), "LatencyAtQuantileMS(99) > 5 || LatencyAtQuantileMS(50.0) > 1");
    }
}
