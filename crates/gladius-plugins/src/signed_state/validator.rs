//! The validator hook: which signers, and which fields per signer, a node
//! accepts.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use super::eth::EthAddress;

/// Decides whether entries by `signer` for `field` are accepted. Called
/// before the (costly) signature check and before asking a peer for an
/// entry, so a refused (signer, field) costs nothing; also applied to the
/// node's own [`set`](super::SignedStateHandle::set).
///
/// Any `Fn(&EthAddress, &str) -> bool + Send + Sync` closure is a validator:
///
/// ```
/// use gladius_plugins::signed_state::{EthAddress, SignedStateConfig};
/// let manager: EthAddress = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".parse().unwrap();
/// // `pool.*` only from the pool manager; everything else from anyone.
/// let config = SignedStateConfig::default().with_validator(move |signer: &EthAddress, field: &str| {
///     !field.starts_with("pool.") || *signer == manager
/// });
/// # let _ = config;
/// ```
pub trait Validator: Send + Sync + 'static {
    /// Whether to accept entries by `signer` for `field`.
    fn accept(&self, signer: &EthAddress, field: &str) -> bool;
}

impl<F> Validator for F
where
    F: Fn(&EthAddress, &str) -> bool + Send + Sync + 'static,
{
    fn accept(&self, signer: &EthAddress, field: &str) -> bool {
        self(signer, field)
    }
}

/// Accepts every signer and field (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Validator for AcceptAll {
    fn accept(&self, _signer: &EthAddress, _field: &str) -> bool {
        true
    }
}

/// Accepts only the listed signers (any field).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    signers: BTreeSet<EthAddress>,
}

impl AllowList {
    /// Allow exactly these signers.
    pub fn new(signers: impl IntoIterator<Item = EthAddress>) -> Self {
        Self {
            signers: signers.into_iter().collect(),
        }
    }
    /// Allow one more signer.
    pub fn with(mut self, signer: EthAddress) -> Self {
        self.signers.insert(signer);
        self
    }
}

impl Validator for AllowList {
    fn accept(&self, signer: &EthAddress, _field: &str) -> bool {
        self.signers.contains(signer)
    }
}

/// Field-prefix ownership on top of a base validator: fields starting with
/// a restricted prefix are accepted only from that prefix's owners (the
/// longest matching prefix decides); all other fields go to the base.
///
/// ```
/// use gladius_plugins::signed_state::{AcceptAll, EthAddress, FieldRules, Validator};
/// let manager: EthAddress = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23".parse().unwrap();
/// let other = EthAddress([7; 20]);
/// let rules = FieldRules::new(AcceptAll).restrict("pool.", [manager]);
/// assert!(rules.accept(&manager, "pool.fee"));
/// assert!(!rules.accept(&other, "pool.fee"));
/// assert!(rules.accept(&other, "status"));
/// ```
#[derive(Clone)]
pub struct FieldRules {
    base: Arc<dyn Validator>,
    rules: Vec<(String, BTreeSet<EthAddress>)>,
}

impl fmt::Debug for FieldRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldRules")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl FieldRules {
    /// Rules over `base`, which decides fields no prefix restricts.
    pub fn new(base: impl Validator) -> Self {
        Self {
            base: Arc::new(base),
            rules: Vec::new(),
        }
    }
    /// Fields starting with `prefix` only from `owners`.
    pub fn restrict(
        mut self,
        prefix: impl Into<String>,
        owners: impl IntoIterator<Item = EthAddress>,
    ) -> Self {
        self.rules
            .push((prefix.into(), owners.into_iter().collect()));
        self
    }
}

impl Validator for FieldRules {
    fn accept(&self, signer: &EthAddress, field: &str) -> bool {
        match self
            .rules
            .iter()
            .filter(|(p, _)| field.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
        {
            Some((_, owners)) => owners.contains(signer),
            None => self.base.accept(signer, field),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_and_field_rules() {
        let (a, b, c) = (
            EthAddress([1; 20]),
            EthAddress([2; 20]),
            EthAddress([3; 20]),
        );
        let allow = AllowList::new([a]).with(b);
        assert!(allow.accept(&a, "x") && allow.accept(&b, "y") && !allow.accept(&c, "x"));

        let rules = FieldRules::new(allow)
            .restrict("pool.", [a])
            .restrict("pool.public.", [a, b]);
        assert!(rules.accept(&a, "pool.fee"));
        assert!(!rules.accept(&b, "pool.fee"));
        assert!(
            rules.accept(&b, "pool.public.x"),
            "the longest prefix decides"
        );
        assert!(rules.accept(&b, "status"));
        assert!(!rules.accept(&c, "status"), "the base decides the rest");
        assert!(AcceptAll.accept(&c, "anything"));
        let closure = move |s: &EthAddress, f: &str| *s == c && f == "only";
        assert!(closure.accept(&c, "only") && !closure.accept(&c, "other"));
    }
}
