//! The bijection between a product's rank in its barcode class and its barcode, in both directions.
//!
//! `data` asks this module for "the j-th generated UPC-A" and, on a lookup, "which j is this UPC-A?". Both
//! are O(1) arithmetic with no table, which is what lets the catalog hold 18 million products in no memory
//! and still answer the 12-digit lookup. Uniqueness is structural: a code is a permutation of j, so two
//! products can never share one, and the fixed demo codes are cut out of the permutation's cycles.

use crate::gs1::{Code, Kind};

/// Every generated code is a `lead` followed by this many free digits, then the check digit.
const TAIL_DIGITS: u32 = 10;
const TAIL: u64 = 10u64.pow(TAIL_DIGITS);
/// UPC-A bodies below this (lead 0, then three more zeros) spell an EAN-8 in GTIN-14 form
/// (`000012345675` is `12345675` padded), some of them restricted-circulation EAN-8s; no real catalog hands
/// them out as UPC-A product codes, so the UPC-A index space starts above them.
const EAN8_SHADOW: u64 = 10u64.pow(7);

/// UPC-A number systems a generated code may start with: 2 (variable weight), 4 (in-store) and 5 (coupons)
/// are never product codes.
const UPC_LEADS: &[u64] = &[0, 1, 3, 6, 7, 8, 9];

/// Two-digit EAN-13 prefixes a generated code may start with. 0x is a UPC-A in disguise (it would be the same
/// GTIN as a UPC), 2x is restricted circulation, 98 and 99 are coupons.
const EAN_LEADS: &[u64] = &[
    10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
    49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97,
];

/// Ranks `j` given to `CodeSpace::code` stay below this. The excluded demo points all sit above it (the
/// smallest is 036000291452, at index 3_600_029_145), which is what makes cycle walking a bijection on the
/// ranks we use; `data::MAX_PRODUCTS` keeps every rank under it.
pub const MAX_RANK: u64 = 1_000_000_000;

/// `x -> (mul * x + add) mod modulus` with `mul` coprime to `modulus`: a permutation of `0..modulus`.
#[derive(Clone, Debug)]
struct Affine {
    modulus: u64,
    mul: u64,
    add: u64,
    inv_mul: u64,
}

impl Affine {
    fn new(modulus: u64, entropy: u64) -> Affine {
        // Start from an odd multiplier in the middle half of the range so consecutive ranks land far apart,
        // then step to one coprime with the modulus (the moduli here only have the factors 2, 3, 5, 7 and
        // 13, so this takes a few steps and never leaves the range).
        let mut mul = (modulus / 4 + entropy % (modulus / 2)) | 1;
        while gcd(mul, modulus) != 1 {
            mul += 2;
        }
        let inv_mul = mod_inverse(mul, modulus)
            // Invariant: the loop above only exits when gcd(mul, modulus) == 1, so the inverse exists.
            .expect("multiplier is coprime with the modulus");
        let add = entropy.rotate_left(29) % modulus;
        Affine { modulus, mul, add, inv_mul }
    }

    fn forward(&self, x: u64) -> u64 {
        ((u128::from(self.mul) * u128::from(x) + u128::from(self.add)) % u128::from(self.modulus)) as u64
    }

    fn backward(&self, y: u64) -> u64 {
        let shifted = (y + self.modulus - self.add) % self.modulus;
        ((u128::from(self.inv_mul) * u128::from(shifted)) % u128::from(self.modulus)) as u64
    }
}

/// One barcode class (UPC-A or EAN-13) as a permuted index space.
#[derive(Clone, Debug)]
pub struct CodeSpace {
    kind: Kind,
    leads: &'static [u64],
    perm: Affine,
    /// Indexes of the fixed demo codes in this space; the permutation walks past them.
    excluded: Vec<u64>,
}

impl CodeSpace {
    /// The UPC-A space for `entropy`, never producing any of `reserved`.
    pub fn upc(entropy: u64, reserved: &[Code]) -> CodeSpace {
        CodeSpace::new(Kind::Upc, UPC_LEADS, entropy, reserved)
    }

    /// The EAN-13 space for `entropy`, never producing any of `reserved`.
    pub fn ean13(entropy: u64, reserved: &[Code]) -> CodeSpace {
        CodeSpace::new(Kind::Ean13, EAN_LEADS, entropy, reserved)
    }

    fn new(kind: Kind, leads: &'static [u64], entropy: u64, reserved: &[Code]) -> CodeSpace {
        let size = leads.len() as u64 * TAIL - shadow(kind, leads);
        let perm = Affine::new(size, entropy);
        let mut space = CodeSpace { kind, leads, perm, excluded: Vec::new() };
        space.excluded = reserved.iter().filter_map(|c| space.index_of(*c)).collect();
        space
    }

    /// The code for rank `j` (< `MAX_RANK`).
    ///
    /// Cycle walking: follow the permutation until it leaves the excluded set. Restricted to the
    /// non-excluded indexes this is still a bijection, and it walks at most once per excluded point.
    pub fn code(&self, j: u64) -> Code {
        debug_assert!(j < MAX_RANK);
        let mut index = self.perm.forward(j);
        while self.excluded.contains(&index) {
            index = self.perm.forward(index);
        }
        self.code_at(index)
    }

    /// The rank whose code is `code`, if `code` belongs to this space and is not a reserved code. The
    /// caller still has to check the rank against the catalog size.
    pub fn rank(&self, code: Code) -> Option<u64> {
        let index = self.index_of(code)?;
        if self.excluded.contains(&index) {
            return None;
        }
        let mut j = self.perm.backward(index);
        while self.excluded.contains(&j) {
            j = self.perm.backward(j);
        }
        (j < MAX_RANK).then_some(j)
    }

    fn code_at(&self, index: u64) -> Code {
        let index = index + shadow(self.kind, self.leads);
        let lead = self.leads[(index / TAIL) as usize];
        Code::from_body(self.kind, lead * TAIL + index % TAIL)
    }

    fn index_of(&self, code: Code) -> Option<u64> {
        if code.kind() != self.kind {
            return None;
        }
        let body = code.body();
        let lead = self.leads.iter().position(|&l| l == body / TAIL)?;
        (lead as u64 * TAIL + body % TAIL).checked_sub(shadow(self.kind, self.leads))
    }
}

/// How much of the start of the index space is never used.
fn shadow(kind: Kind, leads: &[u64]) -> u64 {
    if kind == Kind::Upc && leads.first() == Some(&0) {
        EAN8_SHADOW
    } else {
        0
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The inverse of `a` modulo `m` by the extended Euclidean algorithm, if `a` and `m` are coprime.
fn mod_inverse(a: u64, m: u64) -> Option<u64> {
    let (mut old_r, mut r) = (i128::from(a), i128::from(m));
    let (mut old_s, mut s) = (1i128, 0i128);
    while r != 0 {
        let q = old_r / r;
        (old_r, r) = (r, old_r - q * r);
        (old_s, s) = (s, old_s - q * s);
    }
    if old_r != 1 {
        return None;
    }
    u64::try_from(old_s.rem_euclid(i128::from(m))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn demo_codes() -> Vec<Code> {
        ["123456789012", "036000291452", "7501031311309", "9780471117094"]
            .iter()
            .filter_map(|t| Code::parse_any(t))
            .collect()
    }

    #[test]
    fn affine_round_trips_and_is_a_permutation_on_a_small_modulus() {
        let perm = Affine::new(7 * 1000, 0x9e37_79b9_7f4a_7c15);
        let mut seen = HashSet::new();
        for x in 0..7000 {
            let y = perm.forward(x);
            assert!(y < 7000);
            assert_eq!(perm.backward(y), x);
            assert!(seen.insert(y));
        }
    }

    #[test]
    fn mod_inverse_is_correct() {
        assert_eq!(mod_inverse(3, 10), Some(7));
        assert_eq!(mod_inverse(4, 10), None);
        let m = 78 * TAIL;
        for a in [1u64, 7, 11, 17, 12_345_678_901, m - 1] {
            if gcd(a, m) == 1 {
                let inv = mod_inverse(a, m).expect("coprime");
                assert_eq!((u128::from(a) * u128::from(inv) % u128::from(m)) as u64, 1);
            }
        }
    }

    #[test]
    fn excluded_points_sit_above_every_rank() {
        for entropy in [0u64, 1, 42, u64::MAX] {
            for space in [CodeSpace::upc(entropy, &demo_codes()), CodeSpace::ean13(entropy, &demo_codes())] {
                assert_eq!(space.excluded.len(), 2);
                assert!(space.excluded.iter().all(|&e| e >= MAX_RANK));
            }
        }
    }

    #[test]
    fn cycle_walk_skips_a_reserved_code_that_the_permutation_would_hit() {
        let plain = CodeSpace::upc(7, &[]);
        // Reserve exactly the code rank 5 would get without the reservation.
        let reserved = plain.code(5);
        let space = CodeSpace::upc(7, &[reserved]);
        assert_ne!(space.code(5), reserved);
        assert_eq!(space.rank(space.code(5)), Some(5));
        assert_eq!(space.rank(reserved), None);
        for j in (0..5).chain(6..1000) {
            assert_eq!(space.code(j), plain.code(j));
        }
    }

    #[test]
    fn codes_round_trip_and_never_use_forbidden_leads() {
        let space = CodeSpace::upc(12345, &demo_codes());
        let ean = CodeSpace::ean13(12345, &demo_codes());
        for j in (0..20_000).chain((MAX_RANK - 1000)..MAX_RANK) {
            let code = space.code(j);
            let text = code.to_string();
            assert_eq!(text.len(), 12);
            assert!(!matches!(text.as_bytes()[0], b'2' | b'4' | b'5'), "{text}");
            assert!(!text.starts_with("0000"), "{text} is an EAN-8 in disguise");
            assert_eq!(space.rank(code), Some(j));
            assert_eq!(ean.rank(code), None);

            let code = ean.code(j);
            let text = code.to_string();
            assert_eq!(text.len(), 13);
            assert!(!matches!(text.as_bytes()[0], b'0' | b'2'), "{text}");
            assert!(!text.starts_with("98") && !text.starts_with("99"), "{text}");
            assert_eq!(ean.rank(code), Some(j));
        }
    }

    #[test]
    fn upc_codes_that_spell_an_ean8_are_never_generated_nor_found() {
        let space = CodeSpace::upc(12345, &demo_codes());
        let shadowed = Code::from_body(Kind::Upc, 270_063);
        assert!(shadowed.to_string().starts_with("0000"));
        assert_eq!(space.rank(shadowed), None);
        // Scan a wide sample of ranks: none lands in the shadow.
        for j in (0..MAX_RANK).step_by(99_991) {
            assert!(!space.code(j).to_string().starts_with("0000"));
        }
    }
}
