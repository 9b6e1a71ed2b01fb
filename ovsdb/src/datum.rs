//! OVSDB values (RFC 7047 section 5.1): atoms, and the sets and maps of atoms
//! every column holds, with the diff rule of update2/update3 (ovsdb-server(7)
//! section 4.1.14).
use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use serde_json::{json, Value};

use crate::{
    schema::{AtomicType, BaseType, ColumnType},
    Uuid,
};

/// One value of an atomic type.
#[derive(Clone, Debug)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
        }
    }

    pub fn from_json(ty: AtomicType, v: &Value) -> Result<Atom, String> {
        let wrong = || format!("expected {}, found {}", ty.name(), short(v));
        Ok(match ty {
            AtomicType::Integer => Atom::Integer(v.as_i64().ok_or_else(wrong)?),
            AtomicType::Real => Atom::Real(v.as_f64().ok_or_else(wrong)?),
            AtomicType::Boolean => Atom::Boolean(v.as_bool().ok_or_else(wrong)?),
            AtomicType::String => Atom::String(v.as_str().ok_or_else(wrong)?.to_owned()),
            AtomicType::Uuid => match v.as_array().map(Vec::as_slice) {
                Some([Value::String(tag), Value::String(u)]) if tag == "uuid" => {
                    Atom::Uuid(u.parse().map_err(|e| format!("{e}"))?)
                }
                _ => return Err(wrong()),
            },
        })
    }

    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
        }
    }

    fn default_of(ty: AtomicType) -> Atom {
        match ty {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(Uuid::ZERO),
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

/// A bounded excerpt of a JSON value for error messages: a malformed
/// update can be megabytes long.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 80 {
        s
    } else {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

// Reals compare by total order so that atoms can key sets and maps; OVSDB
// never stores NaN.
impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Atom) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Integer(i) => write!(f, "{i}"),
            Atom::Real(r) => write!(f, "{r}"),
            Atom::Boolean(b) => write!(f, "{b}"),
            Atom::String(s) => write!(f, "{s:?}"),
            Atom::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl From<i64> for Atom {
    fn from(v: i64) -> Atom {
        Atom::Integer(v)
    }
}

impl From<f64> for Atom {
    fn from(v: f64) -> Atom {
        Atom::Real(v)
    }
}

impl From<bool> for Atom {
    fn from(v: bool) -> Atom {
        Atom::Boolean(v)
    }
}

impl From<&str> for Atom {
    fn from(v: &str) -> Atom {
        Atom::String(v.to_owned())
    }
}

impl From<String> for Atom {
    fn from(v: String) -> Atom {
        Atom::String(v)
    }
}

impl From<Uuid> for Atom {
    fn from(v: Uuid) -> Atom {
        Atom::Uuid(v)
    }
}

/// A column's value. A column holding exactly one value is a set of one;
/// sets and maps are kept sorted, as ovsdb-server keeps them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Datum {
    Set(BTreeSet<Atom>),
    Map(BTreeMap<Atom, Atom>),
}

impl Datum {
    pub fn scalar(a: impl Into<Atom>) -> Datum {
        Datum::Set(BTreeSet::from([a.into()]))
    }

    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Datum {
        Datum::Set(atoms.into_iter().map(Into::into).collect())
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Datum {
        Datum::Map(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// The value of a column the server left out of an `initial` or
    /// `insert` row: update2 omits columns that hold their type's default.
    pub fn default_for(ty: &ColumnType) -> Datum {
        match &ty.value {
            None if ty.min == 0 => Datum::Set(BTreeSet::new()),
            None => Datum::scalar(Atom::default_of(ty.key.atomic)),
            Some(_) if ty.min == 0 => Datum::Map(BTreeMap::new()),
            Some(v) => Datum::Map(BTreeMap::from([(Atom::default_of(ty.key.atomic), Atom::default_of(v.atomic))])),
        }
    }

    /// Parses a value of type `ty`, its size checked against the type.
    pub fn from_json(ty: &ColumnType, v: &Value) -> Result<Datum, String> {
        let d = Datum::parse(ty, v)?;
        d.check_size(ty)?;
        Ok(d)
    }

    /// Parses the value of a `modify` column. For a set or map this is a
    /// diff, whose size is not bounded by the type: replacing both elements
    /// of a set of at most 2 is a diff of 4 (Python's IDL checks the diff's
    /// size like a value's and so refuses such updates).
    pub fn diff_from_json(ty: &ColumnType, v: &Value) -> Result<Datum, String> {
        if ty.is_composite() {
            Datum::parse(ty, v)
        } else {
            Datum::from_json(ty, v)
        }
    }

    fn parse(ty: &ColumnType, v: &Value) -> Result<Datum, String> {
        if let Some(vt) = &ty.value {
            let inner =
                unwrap_tagged(v, "map").ok_or_else(|| format!("expected [\"map\", [...]], found {}", short(v)))?;
            let mut map = BTreeMap::new();
            for pair in inner {
                let Some([k, val]) = pair.as_array().map(Vec::as_slice) else {
                    return Err(format!("map element {} is not a [key, value] pair", short(pair)));
                };
                let k = atom(&ty.key, k)?;
                if map.insert(k.clone(), atom(vt, val)?).is_some() {
                    return Err(format!("duplicate map key {k}"));
                }
            }
            return Ok(Datum::Map(map));
        }
        match unwrap_tagged(v, "set") {
            Some(inner) => {
                let mut set = BTreeSet::new();
                for a in inner {
                    let a = atom(&ty.key, a)?;
                    if let Some(dup) = set.replace(a) {
                        return Err(format!("duplicate set element {dup}"));
                    }
                }
                Ok(Datum::Set(set))
            }
            None => Ok(Datum::scalar(atom(&ty.key, v)?)),
        }
    }

    fn check_size(&self, ty: &ColumnType) -> Result<(), String> {
        let n = self.len();
        if n < ty.min || n > ty.max {
            let max = if ty.max == usize::MAX { "unlimited".to_owned() } else { ty.max.to_string() };
            return Err(format!("{n} elements where the type allows {} to {max}", ty.min));
        }
        Ok(())
    }

    /// Applies the `modify` diff `diff` to `self` (ovsdb-server(7) 4.1.14):
    /// a column of at most one value takes the diff as its new value; in a
    /// set each element of the diff is removed if present and added if not
    /// (symmetric difference); in a map a key with the same value is
    /// removed, a key with another value takes the new value, and a new key
    /// is added.
    pub fn apply_diff(&self, ty: &ColumnType, diff: &Datum) -> Result<Datum, String> {
        if !ty.is_composite() {
            diff.check_size(ty)?;
            return Ok(diff.clone());
        }
        let out = match (self, diff) {
            (Datum::Set(old), Datum::Set(d)) => Datum::Set(old.symmetric_difference(d).cloned().collect()),
            (Datum::Map(old), Datum::Map(d)) => {
                let mut new = old.clone();
                for (k, v) in d {
                    match new.get(k) {
                        Some(cur) if cur == v => {
                            new.remove(k);
                        }
                        _ => {
                            new.insert(k.clone(), v.clone());
                        }
                    }
                }
                Datum::Map(new)
            }
            _ => return Err("diff is a set where the column holds a map, or the reverse".to_owned()),
        };
        out.check_size(ty).map_err(|e| format!("diff leaves {e}"))?;
        Ok(out)
    }

    /// The diff ovsdb-server sends in a `modify` for a change from `old` to
    /// `new` (`ovsdb_datum_diff`), so that `old.apply_diff(ty, &d) == new`.
    pub fn diff(old: &Datum, new: &Datum, ty: &ColumnType) -> Datum {
        if !ty.is_composite() {
            return new.clone();
        }
        match (old, new) {
            (Datum::Set(o), Datum::Set(n)) => Datum::Set(o.symmetric_difference(n).cloned().collect()),
            (Datum::Map(o), Datum::Map(n)) => {
                let mut d = BTreeMap::new();
                for (k, v) in o {
                    if !n.contains_key(k) {
                        d.insert(k.clone(), v.clone());
                    }
                }
                for (k, v) in n {
                    if o.get(k) != Some(v) {
                        d.insert(k.clone(), v.clone());
                    }
                }
                Datum::Map(d)
            }
            _ => new.clone(),
        }
    }

    /// The value in OVSDB's JSON notation, as a transaction takes it.
    pub fn to_json(&self) -> Value {
        match self {
            Datum::Set(s) if s.len() == 1 => s.iter().next().map(Atom::to_json).unwrap_or(Value::Null),
            Datum::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Datum::Map(m) => {
                json!(["map", m.iter().map(|(k, v)| json!([k.to_json(), v.to_json()])).collect::<Vec<_>>()])
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Datum::Set(s) => s.len(),
            Datum::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single element of a set of one (an ordinary column's value, or
    /// an optional column that is set).
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Datum::Set(s) if s.len() == 1 => s.iter().next(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_atom()?.as_str()
    }

    pub fn as_integer(&self) -> Option<i64> {
        self.as_atom()?.as_integer()
    }

    pub fn as_real(&self) -> Option<f64> {
        self.as_atom()?.as_real()
    }

    pub fn as_bool(&self) -> Option<bool> {
        self.as_atom()?.as_bool()
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        self.as_atom()?.as_uuid()
    }

    pub fn as_set(&self) -> Option<&BTreeSet<Atom>> {
        match self {
            Datum::Set(s) => Some(s),
            Datum::Map(_) => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<Atom, Atom>> {
        match self {
            Datum::Map(m) => Some(m),
            Datum::Set(_) => None,
        }
    }

    /// The value under a string key of a map column (`external_ids`,
    /// `options`, ...).
    pub fn get(&self, key: &str) -> Option<&Atom> {
        self.as_map()?.get(&Atom::String(key.to_owned()))
    }
}

fn atom(base: &BaseType, v: &Value) -> Result<Atom, String> {
    Atom::from_json(base.atomic, v)
}

fn unwrap_tagged<'a>(v: &'a Value, tag: &str) -> Option<&'a Vec<Value>> {
    match v.as_array().map(Vec::as_slice) {
        Some([Value::String(t), Value::Array(inner)]) if t == tag => Some(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RefType;

    fn base(atomic: AtomicType) -> BaseType {
        BaseType { atomic, ref_table: None, ref_type: RefType::Strong }
    }

    fn ty(key: AtomicType, value: Option<AtomicType>, min: usize, max: usize) -> ColumnType {
        ColumnType { key: base(key), value: value.map(base), min, max }
    }

    const U: usize = usize::MAX;

    fn d(t: &ColumnType, v: Value) -> Datum {
        Datum::from_json(t, &v).unwrap()
    }

    fn apply(t: &ColumnType, old: Value, diff: Value) -> Result<Datum, String> {
        d(t, old).apply_diff(t, &Datum::diff_from_json(t, &diff)?)
    }

    #[test]
    fn set_diff_is_the_symmetric_difference() {
        let t = ty(AtomicType::String, None, 0, U);
        // ovsdb-server(7) 4.1.14: "The difference between two sets are all
        // elements that only belong to one of the sets."
        assert_eq!(
            apply(&t, json!(["set", ["a", "b"]]), json!(["set", ["b", "c"]])),
            Ok(d(&t, json!(["set", ["a", "c"]])))
        );
        // A one-element diff is written as a bare atom, like a scalar value.
        assert_eq!(apply(&t, json!(["set", ["a", "b"]]), json!("a")), Ok(d(&t, json!("b"))));
        assert_eq!(apply(&t, json!("b"), json!("a")), Ok(d(&t, json!(["set", ["a", "b"]]))));
        assert_eq!(apply(&t, json!("a"), json!("a")), Ok(d(&t, json!(["set", []]))));
        assert_eq!(apply(&t, json!(["set", []]), json!(["set", ["x", "y"]])), Ok(d(&t, json!(["set", ["x", "y"]]))));
    }

    #[test]
    fn set_of_uuids() {
        let t = ty(AtomicType::Uuid, None, 0, U);
        let a = json!(["uuid", "00000000-0000-0000-0000-00000000000a"]);
        let b = json!(["uuid", "00000000-0000-0000-0000-00000000000b"]);
        assert_eq!(apply(&t, json!(["set", [a, b]]), b.clone()), Ok(d(&t, a.clone())));
        assert_eq!(apply(&t, a.clone(), b.clone()), Ok(d(&t, json!(["set", [a, b]]))));
    }

    #[test]
    fn bounded_set_diff_may_exceed_the_bound() {
        // {a,b} -> {c,d} in a set of at most 2: the diff has 4 elements.
        let t = ty(AtomicType::Integer, None, 0, 2);
        let diff = json!(["set", [1, 2, 3, 4]]);
        assert!(Datum::from_json(&t, &diff).is_err());
        assert_eq!(apply(&t, json!(["set", [1, 2]]), diff), Ok(d(&t, json!(["set", [3, 4]]))));
        // A result outside the type is an error, not a silently wrong row.
        let e = apply(&t, json!(["set", [1, 2]]), json!(3)).unwrap_err();
        assert!(e.contains("3 elements"), "{e}");
        let t1 = ty(AtomicType::Integer, None, 1, U);
        assert!(apply(&t1, json!(5), json!(5)).unwrap_err().contains("0 elements"));
    }

    #[test]
    fn map_diff_rules() {
        let t = ty(AtomicType::String, Some(AtomicType::String), 0, U);
        let old = json!(["map", [["keep", "1"], ["change", "old"], ["drop", "x"]]]);
        // Same value: removed. Other value: replaced. New key: added.
        let diff = json!(["map", [["change", "new"], ["drop", "x"], ["add", "y"]]]);
        assert_eq!(apply(&t, old, diff), Ok(d(&t, json!(["map", [["keep", "1"], ["change", "new"], ["add", "y"]]]))));
        // A key that is removed is sent with its current value, whatever it is.
        assert_eq!(apply(&t, json!(["map", [["k", ""]]]), json!(["map", [["k", ""]]])), Ok(d(&t, json!(["map", []]))));
        // The spec's example (4.1.14): the diff of {a:1,b:2} -> {b:3,c:4} is
        // {a:1, b:3, c:4}.
        let ti = ty(AtomicType::String, Some(AtomicType::Integer), 0, U);
        let old = d(&ti, json!(["map", [["a", 1], ["b", 2]]]));
        let new = d(&ti, json!(["map", [["b", 3], ["c", 4]]]));
        let diff = Datum::diff(&old, &new, &ti);
        assert_eq!(diff, d(&ti, json!(["map", [["a", 1], ["b", 3], ["c", 4]]])));
        assert_eq!(old.apply_diff(&ti, &diff), Ok(new));
    }

    #[test]
    fn map_diff_is_not_a_set_diff_on_pairs() {
        // A naive client that treats map diffs as a symmetric difference of
        // (key, value) pairs ends up with two values for "b".
        let t = ty(AtomicType::String, Some(AtomicType::Integer), 0, U);
        let got = apply(&t, json!(["map", [["b", 2]]]), json!(["map", [["b", 3]]])).unwrap();
        assert_eq!(got, d(&t, json!(["map", [["b", 3]]])));
    }

    #[test]
    fn single_value_columns_are_replaced() {
        let scalar = ty(AtomicType::Integer, None, 1, 1);
        assert_eq!(apply(&scalar, json!(5), json!(7)), Ok(d(&scalar, json!(7))));
        assert_eq!(apply(&scalar, json!(5), json!(5)), Ok(d(&scalar, json!(5))));
        // An optional column (0 or 1 value) is not composite: the modify
        // holds the new value, an empty set to clear it.
        let opt = ty(AtomicType::String, None, 0, 1);
        assert_eq!(apply(&opt, json!("a"), json!("b")), Ok(d(&opt, json!("b"))));
        assert_eq!(apply(&opt, json!("a"), json!("a")), Ok(d(&opt, json!("a"))));
        assert_eq!(apply(&opt, json!("a"), json!(["set", []])), Ok(d(&opt, json!(["set", []]))));
        assert_eq!(apply(&opt, json!(["set", []]), json!("c")), Ok(d(&opt, json!("c"))));
        // A map of at most one pair is replaced too.
        let m1 = ty(AtomicType::String, Some(AtomicType::String), 0, 1);
        assert_eq!(
            apply(&m1, json!(["map", [["a", "1"]]]), json!(["map", [["a", "1"]]])),
            Ok(d(&m1, json!(["map", [["a", "1"]]])))
        );
    }

    #[test]
    fn diff_round_trips() {
        let sets = [json!(["set", []]), json!("a"), json!(["set", ["a", "b"]]), json!(["set", ["b", "c", "d"]])];
        let t = ty(AtomicType::String, None, 0, U);
        for o in &sets {
            for n in &sets {
                let (o, n) = (d(&t, o.clone()), d(&t, n.clone()));
                let diff = Datum::diff(&o, &n, &t);
                let back = Datum::diff_from_json(&t, &diff.to_json()).unwrap();
                assert_eq!(o.apply_diff(&t, &back), Ok(n));
            }
        }
    }

    #[test]
    fn refuses_malformed_values() {
        let t = ty(AtomicType::Integer, None, 0, U);
        for v in [json!("1"), json!(1.5), json!(["set", [1, 1]]), json!(["set", 1]), json!(["map", []]), json!(null)] {
            assert!(Datum::from_json(&t, &v).is_err(), "{v}");
        }
        let m = ty(AtomicType::String, Some(AtomicType::Integer), 0, U);
        for v in [
            json!(["set", []]),
            json!(["map", [["a"]]]),
            json!(["map", [["a", 1], ["a", 2]]]),
            json!(["map", [[1, 1]]]),
        ] {
            assert!(Datum::from_json(&m, &v).is_err(), "{v}");
        }
        let u = ty(AtomicType::Uuid, None, 1, 1);
        for v in [json!(["named-uuid", "x"]), json!(["uuid", "nope"]), json!("00000000-0000-0000-0000-00000000000a")] {
            assert!(Datum::from_json(&u, &v).is_err(), "{v}");
        }
        // A real column takes integers: ovsdb-server writes 1.0 as 1.
        let r = ty(AtomicType::Real, None, 1, 1);
        assert_eq!(Datum::from_json(&r, &json!(1)).unwrap().as_real(), Some(1.0));
    }

    #[test]
    fn defaults() {
        assert_eq!(Datum::default_for(&ty(AtomicType::Integer, None, 1, 1)), Datum::scalar(0));
        assert_eq!(Datum::default_for(&ty(AtomicType::String, None, 1, 1)), Datum::scalar(""));
        assert!(Datum::default_for(&ty(AtomicType::Uuid, None, 0, 1)).is_empty());
        assert_eq!(
            Datum::default_for(&ty(AtomicType::String, Some(AtomicType::String), 0, U)),
            Datum::Map(BTreeMap::new())
        );
    }
}
