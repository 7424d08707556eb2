//! The load balancer's table as one nft JSON batch (built with the `nftables` crate's schema
//! types, loaded with `nft -j -f -`): the table declared, deleted and re-created with every
//! map, chain and element, so one transaction takes it from whatever it was to the new set.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use nftables::batch::Batch;
use nftables::expr::{
    BinaryOperation, CT, Expression, Meta, MetaKey, NamedExpression, NgMode, Numgen, Payload,
    PayloadField, SetItem, Verdict,
};
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, Rule, SetType, SetTypeValue, Table,
};
use nftables::stmt::{JumpTarget, Mangle, Match, NAT, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{HAIRPIN_MARK, Svc, SvcPort};
use crate::net::NetError;
use crate::net::state::Proto;

/// `VIP . proto . port` → goto the service port's chain.
const SERVICES: &str = "services";
/// `VIP . proto . port` → goto `reject_svc`, for service ports with no ready endpoint.
const NO_ENDPOINTS: &str = "no_endpoints";
const REJECT: &str = "reject_svc";

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn goto(chain: String) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: chain.into(),
    }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// The lookup key of a packet: `ip daddr . meta l4proto . th dport`.
fn packet_key() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}

/// Chains are named after the service port (`svc_web_tcp_80`) and the endpoint's index in
/// it (`ep_web_tcp_80_0`): readable in `nft list`, and stable for an unchanged set. A
/// service in an environment (`web.staging`) has '_' for its '.' (`svc_web_staging_tcp_80`):
/// no label holds a '_', so two services never share a chain.
fn svc_chain(svc: &Svc, p: &SvcPort) -> String {
    let name = svc.name.replace('.', "_");
    format!("svc_{name}_{}_{}", p.proto.name(), p.port)
}

struct Builder<'t> {
    table: &'t str,
    batch: Batch<'static>,
}

impl Builder<'_> {
    /// `add chain`: a base chain on `hook` (type, hook, priority; policy accept) or, without
    /// one, a regular chain.
    fn chain(&mut self, name: &str, hook: Option<(NfChainType, NfHook, i32)>) {
        let mut chain = self.chain_object(name);
        if let Some((chain_type, hook, prio)) = hook {
            chain._type = Some(chain_type);
            chain.hook = Some(hook);
            chain.prio = Some(prio);
            chain.policy = Some(NfChainPolicy::Accept);
        }
        self.batch.add(NfListObject::Chain(chain));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.batch.add(NfListObject::Rule(Rule {
            family: NfFamily::IP,
            table: self.table.to_owned().into(),
            chain: chain.to_owned().into(),
            expr: expr.into(),
            ..Rule::default()
        }));
    }

    /// The crate's map types (0.6) have no `verdict` value type, so the map is built with
    /// its schema type, serialized, and its value type set to `verdict` in the JSON.
    fn verdict_map(&mut self, name: &str) -> serde_json::Value {
        let key_type = [SetType::Ipv4Addr, SetType::InetProto, SetType::InetService];
        let map = NfListObject::Map(Box::new(Map {
            family: NfFamily::IP,
            table: self.table.to_owned().into(),
            name: name.to_owned().into(),
            set_type: SetTypeValue::Concatenated(key_type.to_vec().into()),
            map: SetTypeValue::Single(SetType::Mark),
            ..Map::default()
        }));
        let mut value = serde_json::json!({ "add": map });
        value["add"]["map"]["map"] = "verdict".into();
        value
    }

    /// Elements of `map` (key-value lists to add, keys to delete); None when there are none,
    /// since nft refuses an empty element list.
    fn element_object(
        &self,
        map: &str,
        elems: Vec<Expression<'static>>,
    ) -> Option<NfListObject<'static>> {
        (!elems.is_empty()).then(|| {
            NfListObject::Element(Element {
                family: NfFamily::IP,
                table: self.table.to_owned().into(),
                name: map.to_owned().into(),
                elem: elems.into(),
            })
        })
    }

    fn elements(&mut self, map: &str, elems: Vec<Expression<'static>>) {
        if let Some(o) = self.element_object(map, elems) {
            self.batch.add(o);
        }
    }

    /// The hooks: DNAT through the services map in prerouting (containers, other nodes) and
    /// output (the node itself); reject for service ports without endpoints, before DNAT;
    /// masquerade of hairpin traffic on the way out.
    fn skeleton(&mut self) {
        let lookup = |map: &str| {
            Statement::VerdictMap(nftables::stmt::VerdictMap {
                key: packet_key(),
                data: s(format!("@{map}")),
            })
        };
        for (chain, hook) in [
            ("nat_prerouting", NfHook::Prerouting),
            ("nat_output", NfHook::Output),
        ] {
            self.chain(chain, Some((NfChainType::NAT, hook, -100)));
            self.rule(chain, vec![lookup(SERVICES)]);
        }
        let ct_new = Statement::Match(Match {
            left: Expression::Named(NamedExpression::CT(CT {
                key: "state".into(),
                family: None,
                dir: None,
            })),
            right: s("new"),
            op: Operator::IN,
        });
        // Before the NAT chains (dstnat - 10), as kube-proxy does: a packet that is rejected
        // never gets a conntrack NAT binding.
        for (chain, hook) in [
            ("filter_prerouting", NfHook::Prerouting),
            ("filter_output", NfHook::Output),
        ] {
            self.chain(chain, Some((NfChainType::Filter, hook, -110)));
            self.rule(chain, vec![ct_new.clone(), lookup(NO_ENDPOINTS)]);
        }
        self.chain(REJECT, None);
        self.rule(
            REJECT,
            vec![
                eq(meta(MetaKey::L4proto), s("tcp")),
                Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
            ],
        );
        self.rule(REJECT, vec![Statement::Reject(None)]);
        let mark = || meta(MetaKey::Mark);
        self.chain(
            "nat_postrouting",
            Some((NfChainType::NAT, NfHook::Postrouting, 100)),
        );
        self.rule(
            "nat_postrouting",
            vec![
                eq(
                    Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                        mark(),
                        Expression::Number(HAIRPIN_MARK),
                    ))),
                    Expression::Number(HAIRPIN_MARK),
                ),
                Statement::Masquerade(None),
            ],
        );
    }

    /// A regular chain of the table, as commands name it.
    fn chain_object(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::IP,
            table: self.table.to_owned().into(),
            name: name.to_owned().into(),
            ..Chain::default()
        }
    }

    /// `add chain` (a no-op when it exists) then `flush chain`: an empty chain either way.
    fn empty_chain(&mut self, name: &str) {
        self.chain(name, None);
        self.flush_chain(name);
    }

    fn flush_chain(&mut self, name: &str) {
        let chain = self.chain_object(name);
        self.batch.add_cmd(NfCmd::Flush(FlushObject::Chain(chain)));
    }

    fn delete_chain(&mut self, name: &str) {
        let chain = self.chain_object(name);
        self.batch.delete(NfListObject::Chain(chain));
    }

    /// Endpoint `i` of a service port: mark hairpin traffic (the endpoint calling its own
    /// service) for masquerade, then DNAT to the endpoint.
    fn endpoint_chain(&mut self, chain: &str, i: usize, ep: Ipv4Addr, entry: &PortEntry) {
        let ep_chain = endpoint_chain_name(chain, i);
        self.empty_chain(&ep_chain);
        let mark = || meta(MetaKey::Mark);
        self.rule(
            &ep_chain,
            vec![
                eq(payload("ip", "saddr"), s(ep.to_string())),
                Statement::Mangle(Mangle {
                    key: mark(),
                    value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                        mark(),
                        Expression::Number(HAIRPIN_MARK),
                    ]))),
                }),
            ],
        );
        self.rule(
            &ep_chain,
            vec![
                eq(meta(MetaKey::L4proto), s(entry.proto.name())),
                Statement::DNAT(Some(NAT {
                    addr: Some(s(ep.to_string())),
                    family: None,
                    port: Some(Expression::Number(entry.target.into())),
                    flags: None,
                })),
            ],
        );
    }

    /// The service port's one rule: `numgen random mod N` picks endpoint chain 0..N-1; with
    /// one endpoint, a plain `goto`. The vmap of numgen is an anonymous set, and the kernel
    /// finds each new one a name by scanning every set of the table: 5,000 of them made a
    /// whole-table load take ~4 s of kernel time here, 10,000 chains with plain gotos 0.16 s.
    fn pick_rule(&mut self, chain: &str, endpoints: usize) {
        if endpoints == 1 {
            let target = JumpTarget {
                target: endpoint_chain_name(chain, 0).into(),
            };
            self.rule(chain, vec![Statement::Goto(target)]);
            return;
        }
        let choices = (0..endpoints)
            .map(|i| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                SetItem::Mapping(
                    Expression::Number(index),
                    goto(endpoint_chain_name(chain, i)),
                )
            })
            .collect();
        self.rule(
            chain,
            vec![Statement::VerdictMap(nftables::stmt::VerdictMap {
                key: Expression::Named(NamedExpression::Numgen(Numgen {
                    mode: NgMode::Random,
                    ng_mod: u32::try_from(endpoints).unwrap_or(u32::MAX),
                    offset: None,
                })),
                data: Expression::Named(NamedExpression::Set(choices)),
            })],
        );
    }

    /// The commands that take the table from service ports `old` to `new`, touching only
    /// the ports that changed, in an order nft accepts in one transaction: map elements out,
    /// chains refilled, surplus chains (no longer referenced) deleted, map elements in.
    fn update(&mut self, old: &Ports, new: &Ports) {
        let changed: BTreeSet<&String> = old
            .keys()
            .chain(new.keys())
            .filter(|name| old.get(*name) != new.get(*name))
            .collect();
        let gone: Vec<Expression<'static>> = changed
            .iter()
            .filter_map(|name| old.get(*name))
            .filter(|o| !o.endpoints.is_empty())
            .map(PortEntry::key)
            .collect();
        self.delete_elements(SERVICES, gone);
        let gone = changed
            .iter()
            .filter_map(|name| old.get(*name))
            .filter(|o| o.endpoints.is_empty())
            .map(PortEntry::key)
            .collect();
        self.delete_elements(NO_ENDPOINTS, gone);
        for name in &changed {
            let Some(n) = new.get(*name).filter(|n| !n.endpoints.is_empty()) else {
                continue;
            };
            self.empty_chain(name);
            for (i, ep) in n.endpoints.iter().enumerate() {
                self.endpoint_chain(name, i, *ep, n);
            }
        }
        for name in &changed {
            let Some(o) = old.get(*name).filter(|o| !o.endpoints.is_empty()) else {
                continue;
            };
            let kept = new.get(*name).map_or(0, |n| n.endpoints.len());
            if kept == 0 {
                self.flush_chain(name);
            }
            for i in kept..o.endpoints.len() {
                let ep_chain = endpoint_chain_name(name, i);
                self.flush_chain(&ep_chain);
                self.delete_chain(&ep_chain);
            }
            if kept == 0 {
                self.delete_chain(name);
            }
        }
        let (mut routed, mut refused) = (Vec::new(), Vec::new());
        for name in &changed {
            let Some(n) = new.get(*name) else { continue };
            if n.endpoints.is_empty() {
                refused.push(Expression::List(vec![n.key(), goto(REJECT.to_owned())]));
            } else {
                self.pick_rule(name, n.endpoints.len());
                routed.push(Expression::List(vec![n.key(), goto((*name).clone())]));
            }
        }
        self.elements(SERVICES, routed);
        self.elements(NO_ENDPOINTS, refused);
    }

    fn delete_elements(&mut self, map: &str, keys: Vec<Expression<'static>>) {
        if let Some(o) = self.element_object(map, keys) {
            self.batch.delete(o);
        }
    }
}

/// One service port as programmed, keyed by its chain's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PortEntry {
    vip: Ipv4Addr,
    proto: Proto,
    port: u16,
    target: u16,
    endpoints: Vec<Ipv4Addr>,
}

impl PortEntry {
    /// Its map elements' key: `VIP . proto . port`.
    fn key(&self) -> Expression<'static> {
        Expression::Named(NamedExpression::Concat(vec![
            s(self.vip.to_string()),
            s(self.proto.name()),
            Expression::Number(self.port.into()),
        ]))
    }
}

/// Service ports by chain name.
pub(super) type Ports = BTreeMap<String, PortEntry>;

/// The service ports of `services`, by chain name.
pub(super) fn ports(services: &[Svc]) -> Ports {
    services
        .iter()
        .flat_map(|svc| {
            svc.ports.iter().map(move |p| {
                let entry = PortEntry {
                    vip: svc.vip,
                    proto: p.proto,
                    port: p.port,
                    target: p.target,
                    endpoints: svc.endpoints.clone(),
                };
                (svc_chain(svc, p), entry)
            })
        })
        .collect()
}

fn endpoint_chain_name(svc_chain: &str, i: usize) -> String {
    format!("ep{}_{i}", &svc_chain["svc".len()..])
}

fn table_object(table: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::IP,
        name: table.to_owned().into(),
        handle: None,
    })
}

/// The JSON batch that makes `table` exactly `services`, whatever it held before.
pub(super) fn ruleset(table: &str, services: &[Svc]) -> String {
    let mut b = Builder {
        table,
        batch: Batch::new(),
    };
    // `add` first so `delete` never fails on a fresh node.
    b.batch.add(table_object(table));
    b.batch.delete(table_object(table));
    b.batch.add(table_object(table));
    b.skeleton();
    b.update(&Ports::new(), &ports(services));
    let maps = [b.verdict_map(SERVICES), b.verdict_map(NO_ENDPOINTS)];
    let mut json = serde_json::to_value(b.batch.to_nftables()).unwrap_or_default();
    if let Some(objects) = json["nftables"].as_array_mut() {
        // Right after the table is re-created (the three table commands), before the rules
        // that name the maps.
        for (i, map) in maps.into_iter().enumerate() {
            objects.insert(3 + i, map);
        }
    }
    json.to_string()
}

/// The JSON batch that takes `table`, holding exactly `old`, to `new`; None when nothing
/// changed. Its cost follows the service ports that changed, not the size of the table.
pub(super) fn changes(table: &str, old: &[Svc], new: &[Svc]) -> Option<String> {
    let mut b = Builder {
        table,
        batch: Batch::new(),
    };
    b.update(&ports(old), &ports(new));
    let nftables = b.batch.to_nftables();
    if nftables.objects.is_empty() {
        return None;
    }
    Some(serde_json::to_string(&nftables).unwrap_or_default())
}

/// The JSON batch that removes `table`, present or not.
pub(super) fn delete(table: &str) -> String {
    let mut batch = Batch::new();
    batch.add(table_object(table));
    batch.delete(table_object(table));
    serde_json::to_string(&batch.to_nftables()).unwrap_or_default()
}

/// Loads a JSON batch with `nft -j -f -` in the netns at `ns`: one transaction. Blocking.
pub(super) fn load(ns: Option<&Path>, table: &str, batch: &str) -> Result<(), NetError> {
    crate::net::nft::run_nft(ns, table, &["-j", "-f", "-"], batch.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_maps_chains_and_elements() {
        let svc = Svc {
            name: "web".into(),
            vip: "10.96.0.5".parse().unwrap(),
            ports: vec![SvcPort {
                proto: Proto::Tcp,
                port: 80,
                target: 8080,
            }],
            endpoints: vec!["10.88.1.2".parse().unwrap(), "10.88.2.2".parse().unwrap()],
        };
        let empty = Svc {
            name: "idle".into(),
            endpoints: vec![],
            vip: "10.96.0.6".parse().unwrap(),
            ..svc.clone()
        };
        let json: serde_json::Value =
            serde_json::from_str(&ruleset("berth_svc_n1", &[svc, empty])).unwrap();
        let text = json.to_string();
        for needle in [
            r#""numgen":{"mod":2,"mode":"random"}"#,
            r#""dnat":{"addr":"10.88.2.2","port":8080}"#,
            r#"[{"concat":["10.96.0.5","tcp",80]},{"goto":{"target":"svc_web_tcp_80"}}]"#,
            r#"[{"concat":["10.96.0.6","tcp",80]},{"goto":{"target":"reject_svc"}}]"#,
            r#""name":"ep_web_tcp_80_1""#,
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(
            !text.contains("svc_idle"),
            "no chain for a service without endpoints"
        );
    }

    #[test]
    fn one_endpoint_is_a_plain_goto() {
        let svc = Svc {
            name: "solo".into(),
            vip: "10.96.0.7".parse().unwrap(),
            ports: vec![SvcPort {
                proto: Proto::Tcp,
                port: 80,
                target: 8080,
            }],
            endpoints: vec!["10.88.1.2".parse().unwrap()],
        };
        let text = ruleset("berth_svc_n1", &[svc]);
        assert!(
            text.contains(
                r#""chain":"svc_solo_tcp_80","expr":[{"goto":{"target":"ep_solo_tcp_80_0"}}]"#
            ),
            "{text}"
        );
        assert!(!text.contains("numgen"), "no anonymous map: {text}");
    }
}
