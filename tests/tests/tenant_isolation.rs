//! Tenant isolation under random load: three tenants drive a few thousand random operations
//! through the nine nodes of the four multi-tenant models (Customer, Project, Quote,
//! Recommendation), many of them aimed at the other tenants' rows on purpose (their ids, their
//! unique keys, filters naming them or `tenant_id` itself, foreign keys to them, traversals
//! from them), on the servers and on the embedded set. No answer may contain, and no write may
//! touch, another tenant's row; a foreign key may not name one; unique keys are unique within
//! a tenant only.
//!
//! The test keeps an ownership oracle: each row's tenant, state, version and unique key, as
//! the writes reported them. It says what every answer may contain. Plain SQL, the vector
//! store's own API and the graph's own tables (read around the code under test) say what the
//! stores hold, and are compared with the oracle every few hundred operations and at the end.
//! The sequence comes from a seeded generator: `DATAFLOW_TENANT_SEED` replays a run (the seed is
//! printed), `DATAFLOW_TENANT_OPERATIONS` changes its length.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use dataflow_core::nodes::aggregate::{AggregateInput, AggregateOp, AggregateOutput, Metric};
use dataflow_core::nodes::bulk_upsert::{BulkUpsertInput, BulkUpsertOutput};
use dataflow_core::nodes::create::{CreateInput, CreateOutput};
use dataflow_core::nodes::delete::{DeleteInput, DeleteOutput, DependentRows};
use dataflow_core::nodes::graph::{GraphInput, GraphOutput};
use dataflow_core::nodes::list::{ListInput, ListOutput};
use dataflow_core::nodes::read::{ReadInput, ReadOutput};
use dataflow_core::nodes::search::{SearchInput, SearchOutput};
use dataflow_core::nodes::update::{UpdateInput, UpdateOutput};
use dataflow_core::store::graph::Direction;
use dataflow_core::{Context, Error, Filter, Model, ModelMeta, ModelNodes, Node, OnDelete, Record, SortKey};
use dataflow_models::{
    CategoryCreateNode, Customer, CustomerCreateNode, ProductCreateNode, Project, ProjectBulkUpsertNode, ProjectCreateNode,
    ProjectGraphNode, ProjectUpdateNode, Quote, QuoteCreateNode, Recommendation,
};
use dataflow_tests::fixture::{Backend, Fixture};
use dataflow_tests::on_both_backends;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{Map, Value as Json, json};

/// The tenants; each acts through a context of its own.
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// The seed when `DATAFLOW_TENANT_SEED` is not set.
const DEFAULT_SEED: u64 = 0x7e4a_4715_0fa1_2026;
/// Random operations per backend when `DATAFLOW_TENANT_OPERATIONS` is not set (the rows seeded
/// before them come on top).
const DEFAULT_OPERATIONS: usize = 2_400;
/// Operations between two full comparisons of the stores with the oracle.
const CHECK_EVERY: usize = 300;
/// The words generated texts are made of: shared by all tenants, so a search for one tenant's
/// text finds rows of every tenant unless the scope holds.
const WORDS: &[&str] = &[
    "drill",
    "cordless",
    "hammer",
    "warehouse",
    "fit-out",
    "battery",
    "steel",
    "insulated",
    "safety",
    "torque",
    "compact",
    "heavy",
    "duty",
    "site",
    "renovation",
    "office",
    "bridge",
    "tunnel",
    "roof",
    "cable",
];
const SEGMENTS: &[&str] = &["industrial", "construction", "retail", "public"];
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "GB", "AT"];
const PROJECT_STATUSES: &[&str] = &["draft", "active", "won", "lost", "closed"];
const QUOTE_STATUSES: &[&str] = &["draft", "sent", "accepted", "rejected", "expired"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "CHF"];
const RECOMMENDATION_STATUSES: &[&str] = &["proposed", "accepted", "dismissed"];

// What can go wrong, one line each in the failure report.
const FOREIGN_READ: &str = "an answer contained or revealed another tenant's row";
const FOREIGN_WRITE: &str = "a write touched another tenant's row";
const WRONG_TENANT: &str = "a write landed under another tenant";
const FOREIGN_KEY: &str = "a foreign key naming another tenant's row was accepted";
const TENANT_COLUMN: &str = "a filter, sort or group on tenant_id was accepted";
const SHARED_KEY: &str = "a unique key that only another tenant holds was refused";
const OWN_ROWS: &str = "the caller's own rows were answered or written wrongly";
const STORES: &str = "the stores disagree with what the writes reported";

/// The four multi-tenant models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Customer,
    Project,
    Quote,
    Recommendation,
}

const KINDS: [Kind; 4] = [Kind::Customer, Kind::Project, Kind::Quote, Kind::Recommendation];

impl Kind {
    fn meta(self) -> &'static ModelMeta {
        match self {
            Kind::Customer => Customer::meta(),
            Kind::Project => Project::meta(),
            Kind::Quote => Quote::meta(),
            Kind::Recommendation => Recommendation::meta(),
        }
    }

    fn name(self) -> &'static str {
        self.meta().name
    }

    fn by_name(name: &str) -> Option<Kind> {
        KINDS.into_iter().find(|k| k.name() == name)
    }

    /// The field unique within a tenant, if the model has one.
    fn unique_key(self) -> Option<&'static str> {
        match self {
            Kind::Customer => Some("email"),
            Kind::Quote => Some("number"),
            Kind::Project | Kind::Recommendation => None,
        }
    }

    /// Foreign keys to rows of multi-tenant models: field, target, whether required.
    fn tenant_refs(self) -> &'static [(&'static str, Kind, bool)] {
        match self {
            Kind::Customer => &[],
            Kind::Project => &[("customer_id", Kind::Customer, true)],
            Kind::Quote => &[("customer_id", Kind::Customer, true), ("project_id", Kind::Project, false)],
            Kind::Recommendation => &[("project_id", Kind::Project, true)],
        }
    }

    /// An indexed text field to group and sort by.
    fn group_field(self) -> &'static str {
        match self {
            Kind::Customer => "segment",
            Kind::Project | Kind::Quote | Kind::Recommendation => "status",
        }
    }
}

/// A multi-tenant model with its nine generated nodes, so one generic driver runs them all.
trait Subject: Model {
    const KIND: Kind;
    type Create: Node<Input = CreateInput<Self>, Output = CreateOutput<Self>> + Default;
    type Read: Node<Input = ReadInput, Output = ReadOutput<Self>> + Default;
    type Update: Node<Input = UpdateInput, Output = UpdateOutput<Self>> + Default;
    type Delete: Node<Input = DeleteInput, Output = DeleteOutput> + Default;
    type List: Node<Input = ListInput, Output = ListOutput<Self>> + Default;
    type BulkUpsert: Node<Input = BulkUpsertInput, Output = BulkUpsertOutput> + Default;
    type Search: Node<Input = SearchInput, Output = SearchOutput<Self>> + Default;
    type Graph: Node<Input = GraphInput, Output = GraphOutput<Self>> + Default;
    type Aggregate: Node<Input = AggregateInput, Output = AggregateOutput> + Default;
}

macro_rules! subject {
    ($($model:ident),*) => {$(
        impl Subject for $model {
            const KIND: Kind = Kind::$model;
            type Create = <$model as ModelNodes>::Create;
            type Read = <$model as ModelNodes>::Read;
            type Update = <$model as ModelNodes>::Update;
            type Delete = <$model as ModelNodes>::Delete;
            type List = <$model as ModelNodes>::List;
            type BulkUpsert = <$model as ModelNodes>::BulkUpsert;
            type Search = <$model as ModelNodes>::Search;
            type Graph = <$model as ModelNodes>::Graph;
            type Aggregate = <$model as ModelNodes>::Aggregate;
        }
    )*};
}
subject!(Customer, Project, Quote, Recommendation);

/// Runs `$self.$method::<M>(args)` with `M` the model of `$kind`.
macro_rules! by_kind {
    ($kind:expr, $self:ident . $method:ident ( $($arg:expr),* )) => {
        match $kind {
            Kind::Customer => $self.$method::<Customer>($($arg),*).await,
            Kind::Project => $self.$method::<Project>($($arg),*).await,
            Kind::Quote => $self.$method::<Quote>($($arg),*).await,
            Kind::Recommendation => $self.$method::<Recommendation>($($arg),*).await,
        }
    };
}

/// The nine nodes, with how often the generator picks each (out of 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Read,
    Update,
    Delete,
    List,
    BulkUpsert,
    Search,
    Graph,
    Aggregate,
}

const WEIGHTS: [(Op, u32); 9] = [
    (Op::Create, 11),
    (Op::Read, 13),
    (Op::Update, 13),
    (Op::Delete, 5),
    (Op::List, 12),
    (Op::BulkUpsert, 8),
    (Op::Search, 12),
    (Op::Graph, 15),
    (Op::Aggregate, 11),
];

/// Where a row stands, as the writes reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    SoftDeleted,
    Gone,
}
use State::{Gone, Live, SoftDeleted};

/// What the oracle knows of one row.
#[derive(Debug, Clone)]
struct Owned {
    tenant: usize,
    state: State,
    version: i64,
    key: Option<String>,
}

/// The ownership oracle: per model, every row a write reported, by primary key. Bookkeeping of
/// what the nodes answered, not a second store: it holds no field values but the unique key.
#[derive(Default)]
struct Oracle {
    rows: [BTreeMap<i64, Owned>; 4],
    /// Rows a write reported since the last checkpoint.
    touched: BTreeSet<(Kind, i64)>,
}

impl Oracle {
    fn of(&self, kind: Kind) -> &BTreeMap<i64, Owned> {
        &self.rows[kind as usize]
    }

    fn get(&self, kind: Kind, id: i64) -> Option<&Owned> {
        self.of(kind).get(&id)
    }

    /// The row, to record a write to it.
    fn get_mut(&mut self, kind: Kind, id: i64) -> Option<&mut Owned> {
        self.touched.insert((kind, id));
        self.rows[kind as usize].get_mut(&id)
    }

    fn put(&mut self, kind: Kind, id: i64, owned: Owned) {
        self.touched.insert((kind, id));
        self.rows[kind as usize].insert(id, owned);
    }

    /// The rows of `kind` that belong (`own`) or do not belong (`!own`) to `t`, in `states`.
    fn select(&self, kind: Kind, t: usize, own: bool, states: &[State]) -> Vec<i64> {
        self.of(kind)
            .iter()
            .filter(|(_, o)| (o.tenant == t) == own && states.contains(&o.state))
            .map(|(id, _)| *id)
            .collect()
    }

    /// What a read of `kind` by `t` may return.
    fn visible(&self, kind: Kind, t: usize, include_deleted: bool) -> BTreeSet<i64> {
        let states: &[State] = if include_deleted { &[Live, SoftDeleted] } else { &[Live] };
        self.select(kind, t, true, states).into_iter().collect()
    }

    /// The unique keys `t` holds (a soft-deleted row keeps its key).
    fn keys(&self, kind: Kind, t: usize) -> BTreeSet<String> {
        self.of(kind)
            .values()
            .filter(|o| o.tenant == t && o.state != Gone)
            .filter_map(|o| o.key.clone())
            .collect()
    }

    /// The unique keys other tenants hold and `t` does not.
    fn foreign_keys(&self, kind: Kind, t: usize) -> Vec<String> {
        let own = self.keys(kind, t);
        let others: BTreeSet<String> = self
            .of(kind)
            .values()
            .filter(|o| o.tenant != t && o.state != Gone)
            .filter_map(|o| o.key.clone())
            .filter(|k| !own.contains(k))
            .collect();
        others.into_iter().collect()
    }
}

/// What happened, for the summary line.
#[derive(Default)]
struct Tally {
    /// Operations run, by node.
    runs: BTreeMap<Op, usize>,
    /// Operations aimed at another tenant's rows (ids, unique keys, filters, foreign keys,
    /// traversals) or at `tenant_id`, by node.
    cross: BTreeMap<Op, usize>,
    /// Of those, refused: an error, or a write that wrote nothing.
    refused: usize,
    /// Of those, answered with the caller's rows only.
    contained: usize,
    /// Unique keys written that another tenant holds too (each must be accepted).
    shared_keys: usize,
    /// Ids of hard-deleted rows of one tenant written again by BulkUpsert for another.
    takeovers: usize,
    /// Deletes of own rows refused because other rows still named them (`on_delete` restrict).
    restricted: usize,
    /// Rows seeded before the random operations.
    seeded: usize,
    checkpoints: usize,
    search_hits: usize,
    neighbours: usize,
}

impl Tally {
    fn run(&mut self, op: Op) {
        *self.runs.entry(op).or_default() += 1;
    }

    fn cross(&mut self, op: Op) {
        *self.cross.entry(op).or_default() += 1;
    }
}

/// How an operation with a filter must answer.
enum Expect {
    /// Exactly these of the caller's rows: the filter names rows by id, so the oracle knows.
    Exactly(BTreeSet<i64>),
    /// Some of the caller's visible rows (the answer depends on field values).
    Within,
    /// An input error: the filter names `tenant_id`, which no caller may filter on.
    Refused,
}

/// A filter for one tenant that names other tenants' rows, keys or the tenant column.
struct Probe {
    filter: Filter,
    expect: Expect,
    /// Rows of the same model and another tenant that the filter names by id.
    foreign: Vec<i64>,
    /// The filter names something of another tenant.
    crosses: bool,
}

/// A generated row and what is special about it.
struct NewRow {
    row: Map<String, Json>,
    /// A foreign key deliberately naming another tenant's live row: field and id.
    foreign_ref: Option<(&'static str, i64)>,
    /// The unique key is one another tenant holds.
    shared_key: bool,
}

/// What a BulkUpsert row is meant to do.
enum Plan {
    Insert { shared_key: bool },
    Update(i64),
    ForeignId(i64),
    Takeover { id: i64, former: usize },
    ForeignRef(&'static str, i64),
}

/// The random driver: the fixture, one context per tenant, the generator and the oracle.
struct Driver<'a> {
    fx: &'a Fixture,
    backend: &'static str,
    seed: u64,
    ctxs: Vec<Context>,
    rng: TestRng,
    oracle: Oracle,
    /// Makes generated texts unique, so a row's own text finds it first.
    serial: u64,
    /// Makes generated unique keys unique.
    keys: u64,
    categories: Vec<i64>,
    products: Vec<i64>,
    tally: Tally,
    violations: BTreeMap<&'static str, Vec<String>>,
    /// The operation running, for messages.
    step: usize,
    /// Every row as plain SQL read it at the last checkpoint.
    snapshot: BTreeMap<Kind, BTreeMap<i64, Json>>,
}

impl<'a> Driver<'a> {
    fn new(fx: &'a Fixture, backend: Backend, seed: u64) -> Driver<'a> {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Driver {
            fx,
            backend: match backend {
                Backend::Servers => "servers",
                Backend::Embedded => "embedded",
            },
            seed,
            ctxs: TENANTS.iter().map(|t| fx.tenant(t)).collect(),
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            oracle: Oracle::default(),
            serial: 0,
            keys: 0,
            categories: Vec::new(),
            products: Vec::new(),
            tally: Tally::default(),
            violations: BTreeMap::new(),
            step: 0,
            snapshot: BTreeMap::new(),
        }
    }

    /// Where the run stands, for messages.
    fn at(&self) -> String {
        format!("[{} seed {:#x} op {}]", self.backend, self.seed, self.step)
    }

    fn violation(&mut self, category: &'static str, detail: String) {
        let line = format!("{} {detail}", self.at());
        self.violations.entry(category).or_default().push(line);
    }

    /// Panics on an error in an operation that must succeed: the test itself is wrong then,
    /// or the stores failed, and nothing after it could be trusted.
    fn fail(&self, what: &str, e: &Error) -> ! {
        panic!("{} {what}: {e}", self.at())
    }

    fn ctx(&self, t: usize) -> Context {
        self.ctxs[t].clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.rng.random_range(0..items.len())].clone())
        }
    }

    /// Up to `max` distinct items of `items`.
    fn sample(&mut self, items: &[i64], max: usize) -> Vec<i64> {
        let mut pool = items.to_vec();
        let mut out = Vec::new();
        while !pool.is_empty() && out.len() < max {
            out.push(pool.swap_remove(self.rng.random_range(0..pool.len())));
        }
        out
    }

    fn pick_id(&mut self, kind: Kind, t: usize, own: bool, states: &[State]) -> Option<i64> {
        let ids = self.oracle.select(kind, t, own, states);
        self.pick(&ids)
    }

    fn other_tenant(&mut self, t: usize) -> usize {
        (t + self.rng.random_range(1..TENANTS.len())) % TENANTS.len()
    }

    /// A few shared words and a unique marker.
    fn text(&mut self, words: usize) -> String {
        let mut parts: Vec<String> = (0..words).map(|_| self.pick(WORDS).unwrap().to_owned()).collect();
        self.serial += 1;
        parts.push(format!("n{}", self.serial));
        parts.join(" ")
    }

    fn fresh_key(&mut self, kind: Kind) -> String {
        self.keys += 1;
        assert!(self.keys < 100_000, "quote numbers have five digits");
        match kind {
            Kind::Customer => format!("c{}@mail.example", self.keys),
            _ => format!("Q-2026-{:05}", self.keys),
        }
    }

    fn word(&mut self, words: &[&str]) -> Json {
        json!(self.pick(words).unwrap())
    }

    /// Values for every field of `kind` but the primary key, the unique key and the foreign
    /// keys to multi-tenant models.
    fn plain_fields(&mut self, kind: Kind) -> Map<String, Json> {
        let object = match kind {
            Kind::Customer => json!({
                "name": format!("Buyer {}", self.text(2)),
                "segment": self.word(SEGMENTS),
                "country": self.word(COUNTRIES),
                "credit_limit": self.rng.random_range(0..50_000) as f64,
            }),
            Kind::Project => json!({
                "name": format!("Project {}", self.text(2)),
                "description": self.text(5),
                "status": self.word(PROJECT_STATUSES),
                "budget": if self.chance(0.5) { json!(self.rng.random_range(1_000..100_000) as f64) } else { Json::Null },
                "category_id": if self.chance(0.8) { json!(self.pick(&self.categories.clone())) } else { Json::Null },
                "due_at": null,
            }),
            Kind::Quote => json!({
                "total": self.rng.random_range(0..20_000) as f64 + 0.5,
                "currency": self.word(CURRENCIES),
                "status": self.word(QUOTE_STATUSES),
                "valid_until": "2026-12-31T00:00:00Z",
                "notes": format!("Quote for {}", self.text(3)),
            }),
            Kind::Recommendation => json!({
                "product_id": self.pick(&self.products.clone()),
                "score": self.rng.random_range(0..=100) as f64 / 100.0,
                "rationale": format!("Fits {}", self.text(3)),
                "status": self.word(RECOMMENDATION_STATUSES),
            }),
        };
        object.as_object().cloned().expect("an object")
    }

    /// A patch of one or two plain fields.
    fn patch(&mut self, kind: Kind) -> Map<String, Json> {
        let fields = self.plain_fields(kind);
        let names: Vec<&String> = fields
            .keys()
            .filter(|f| !matches!(f.as_str(), "category_id" | "product_id" | "due_at" | "valid_until"))
            .collect();
        let first = self.rng.random_range(0..names.len());
        let second = self.rng.random_range(0..names.len());
        [first, second]
            .into_iter()
            .map(|i| (names[i].clone(), fields[names[i]].clone()))
            .collect()
    }

    /// Whether `t` has the live rows a new row of `kind` must point at.
    fn can_create(&self, kind: Kind, t: usize) -> bool {
        kind.tenant_refs()
            .iter()
            .all(|(_, target, required)| !required || !self.oracle.select(*target, t, true, &[Live]).is_empty())
    }

    /// A valid new row of `kind` for `t`. Its foreign keys name `t`'s live rows, except that
    /// with `foreign_ref` one names another tenant's live row; with `shared_key` its unique
    /// key is one another tenant holds.
    fn new_row(&mut self, kind: Kind, t: usize, foreign_ref: bool, shared_key: bool) -> NewRow {
        let mut row = self.plain_fields(kind);
        let refs = kind.tenant_refs();
        let candidates: Vec<usize> = (0..refs.len())
            .filter(|&i| !self.oracle.select(refs[i].1, t, false, &[Live]).is_empty())
            .collect();
        let foreign_slot = if foreign_ref { self.pick(&candidates) } else { None };
        let mut chosen = None;
        for (i, (field, target, required)) in refs.iter().enumerate() {
            if Some(i) == foreign_slot {
                let id = self.pick_id(*target, t, false, &[Live]).expect("a candidate");
                row.insert((*field).to_owned(), json!(id));
                chosen = Some((*field, id));
                continue;
            }
            let own = self.pick_id(*target, t, true, &[Live]);
            let value = match own {
                Some(id) if *required || self.chance(0.7) => json!(id),
                Some(_) => Json::Null,
                None if *required => panic!("{} no live {target:?} of {} for a new {kind:?}", self.at(), TENANTS[t]),
                None => Json::Null,
            };
            row.insert((*field).to_owned(), value);
        }
        let mut shared = false;
        if let Some(key_field) = kind.unique_key() {
            let foreign_keys = self.oracle.foreign_keys(kind, t);
            let key = match self.pick(&foreign_keys) {
                Some(k) if shared_key => {
                    shared = true;
                    k
                }
                _ => self.fresh_key(kind),
            };
            row.insert(key_field.to_owned(), json!(key));
        }
        NewRow {
            row,
            foreign_ref: chosen,
            shared_key: shared,
        }
    }

    /// The row of `kind` with primary key `id` as plain SQL reads it, if stored.
    async fn stored(&self, kind: Kind, id: i64) -> Option<Json> {
        let table = kind.meta().table;
        if self.fx.count(table, &format!("id = {id}")).await == 0 {
            return None;
        }
        Some(self.fx.stored_row(table, id).await)
    }

    /// Records a row a write reported for `t`, checking in plain SQL that it is stored under
    /// `t` and that it was not a live row of someone already.
    async fn adopt(&mut self, kind: Kind, t: usize, id: i64, version: i64, key: Option<String>) {
        if let Some(o) = self.oracle.get(kind, id).filter(|o| o.state != Gone).cloned() {
            let category = if o.tenant == t { OWN_ROWS } else { FOREIGN_WRITE };
            self.violation(
                category,
                format!(
                    "a new {kind:?} of {} came back with id {id}, a stored row of {}",
                    TENANTS[t], TENANTS[o.tenant]
                ),
            );
        }
        match self.stored(kind, id).await {
            Some(row) if row["tenant_id"] == json!(TENANTS[t]) => {}
            other => self.violation(
                WRONG_TENANT,
                format!("{kind:?} {id} written for {} is stored as {other:?}", TENANTS[t]),
            ),
        }
        self.oracle.put(
            kind,
            id,
            Owned {
                tenant: t,
                state: Live,
                version,
                key,
            },
        );
    }

    /// Compares a row of another tenant before and after an attempt on it.
    fn unchanged(&mut self, kind: Kind, id: i64, before: &Option<Json>, after: &Option<Json>, attempt: &str) {
        if before != after {
            self.violation(
                FOREIGN_WRITE,
                format!("{attempt} changed {kind:?} {id}:\n    before {before:?}\n    after  {after:?}"),
            );
            // Follow the store from here on, so later checks report new damage only.
            let version = after.as_ref().and_then(|r| r["version"].as_i64());
            if let (Some(o), Some(v)) = (self.oracle.get_mut(kind, id), version) {
                o.version = v;
            }
        }
    }

    /// Checks that a row an answer returned is the caller's and visible to it; false if not.
    fn check_returned(&mut self, kind: Kind, t: usize, id: i64, include_deleted: bool, answer: &str) -> bool {
        match self.oracle.get(kind, id).cloned() {
            Some(o) if o.tenant == t => {
                let visible = o.state == Live || (include_deleted && o.state == SoftDeleted);
                if !visible {
                    self.violation(OWN_ROWS, format!("{answer} returned {kind:?} {id}, which is {:?}", o.state));
                }
                true
            }
            Some(o) => {
                self.violation(
                    FOREIGN_READ,
                    format!("{answer} for {} returned {kind:?} {id} of {}", TENANTS[t], TENANTS[o.tenant]),
                );
                false
            }
            None => {
                self.violation(STORES, format!("{answer} returned {kind:?} {id}, which no write reported"));
                false
            }
        }
    }

    /// A filter naming other tenants' rows, keys or the tenant column, and what `t` must get
    /// from it given `visible`, the rows the operation can see or touch. `broad` allows
    /// filters that match most of `t`'s rows (not for deletes); `negation` allows `$not`
    /// (not for searches, whose metadata filters have no negation).
    fn probe(&mut self, kind: Kind, t: usize, visible: &BTreeSet<i64>, broad: bool, negation: bool) -> Probe {
        let own_any = self.oracle.select(kind, t, true, &[Live, SoftDeleted, Gone]);
        let foreign_any = self.oracle.select(kind, t, false, &[Live, SoftDeleted]);
        let own = self.sample(&own_any, 4);
        let foreign = self.sample(&foreign_any, 4);
        let own_set: BTreeSet<i64> = own.iter().copied().collect();
        let named_own: BTreeSet<i64> = visible.intersection(&own_set).copied().collect();
        let shapes = 4 + usize::from(broad) + usize::from(broad && negation);
        let shape = self.rng.random_range(0..=shapes);
        let make = |json: Json| Filter::from_json(&json).unwrap_or_else(|e| panic!("a well-formed filter {json}: {e}"));
        match shape {
            // Ids of several tenants in one list.
            0 if !foreign.is_empty() => {
                let ids: Vec<i64> = own.iter().chain(&foreign).copied().collect();
                Probe {
                    filter: make(json!({"id": {"$in": ids}})),
                    expect: Expect::Exactly(named_own),
                    foreign,
                    crosses: true,
                }
            }
            // Only other tenants' ids.
            1 if !foreign.is_empty() => Probe {
                filter: make(if foreign.len() == 1 {
                    json!({"id": foreign[0]})
                } else {
                    json!({"id": {"$in": foreign}})
                }),
                expect: Expect::Exactly(BTreeSet::new()),
                foreign,
                crosses: true,
            },
            // `$or`: the tenant scope must hold around the whole filter, not one branch.
            2 if !foreign.is_empty() => {
                if broad && (own.is_empty() || self.chance(0.3)) {
                    Probe {
                        filter: make(json!({"$or": [{"id": {"$in": foreign}}, {"id": {"$gte": 0}}]})),
                        expect: Expect::Exactly(visible.clone()),
                        foreign,
                        crosses: true,
                    }
                } else {
                    let own_list = if own.is_empty() { vec![-1] } else { own.clone() };
                    Probe {
                        filter: make(json!({"$or": [{"id": {"$in": foreign}}, {"id": {"$in": own_list}}]})),
                        expect: Expect::Exactly(named_own),
                        foreign,
                        crosses: true,
                    }
                }
            }
            // A foreign key naming another tenant's row, or another tenant's unique keys.
            3 => {
                let refs = kind.tenant_refs();
                if let Some((field, target, _)) = self.pick(refs)
                    && let Some(parent) = self.pick_id(target, t, false, &[Live, SoftDeleted])
                {
                    return Probe {
                        filter: make(json!({ field: parent })),
                        expect: Expect::Within,
                        foreign: Vec::new(),
                        crosses: true,
                    };
                }
                let keys = self.oracle.foreign_keys(kind, t);
                match kind.unique_key() {
                    Some(key_field) if !keys.is_empty() => {
                        let some: Vec<String> = (0..3).filter_map(|_| self.pick(&keys)).collect();
                        Probe {
                            filter: make(json!({ key_field: {"$in": some} })),
                            expect: Expect::Within,
                            foreign: Vec::new(),
                            crosses: true,
                        }
                    }
                    _ => self.tenant_column_probe(t, &own),
                }
            }
            // Everything but some rows of every tenant.
            5 if broad => {
                let ids: Vec<i64> = own.iter().chain(&foreign).copied().chain([-1]).collect();
                Probe {
                    filter: make(json!({"id": {"$nin": ids}})),
                    expect: Expect::Exactly(visible.difference(&own_set).copied().collect()),
                    foreign,
                    crosses: true,
                }
            }
            6 if broad && negation => {
                let ids: Vec<i64> = own.iter().chain(&foreign).copied().chain([-1]).collect();
                Probe {
                    filter: make(json!({"$not": {"id": {"$in": ids}}})),
                    expect: Expect::Exactly(visible.difference(&own_set).copied().collect()),
                    foreign,
                    crosses: true,
                }
            }
            // The tenant column itself (also the fallback when a shape has nothing to name).
            _ => self.tenant_column_probe(t, &own),
        }
    }

    /// A filter on `tenant_id`, which is no model field: it must be refused.
    fn tenant_column_probe(&mut self, t: usize, own: &[i64]) -> Probe {
        let other = TENANTS[self.other_tenant(t)];
        let json = match self.rng.random_range(0..3) {
            0 => json!({"tenant_id": other}),
            1 if !own.is_empty() => json!({"$or": [{"id": {"$in": own}}, {"tenant_id": other}]}),
            _ => json!({"tenant_id": {"$ne": TENANTS[t]}}),
        };
        Probe {
            filter: Filter::from_json(&json).expect("a well-formed filter"),
            expect: Expect::Refused,
            foreign: Vec::new(),
            crosses: true,
        }
    }

    /// The stored rows named by id in a probe, before or after the operation.
    async fn snapshot_of(&self, kind: Kind, ids: &[i64]) -> Vec<Option<Json>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            out.push(self.stored(kind, id).await);
        }
        out
    }

    /// How a refused probe ended: an input error is right; anything else is reported.
    fn refused_probe<T>(&mut self, op: Op, kind: Kind, result: &Result<T, Error>, filter: &Filter) {
        match result {
            Err(Error::InvalidInput { .. }) => self.tally.refused += 1,
            Err(e) => self.violation(
                TENANT_COLUMN,
                format!(
                    "{kind:?}{op:?} with {} failed in a store instead of being refused: {e}",
                    filter.to_json()
                ),
            ),
            Ok(_) => self.violation(TENANT_COLUMN, format!("{kind:?}{op:?} ran with {}", filter.to_json())),
        }
    }

    /// Seeds global categories and products, then rows of every tenant, with the same unique
    /// keys in all three tenants (each must be accepted, as a row of its own).
    async fn seed_rows(&mut self) {
        let fx = self.fx;
        for i in 0..3 {
            let record = serde_json::from_value(json!({"slug": format!("ti-{i}"), "name": format!("Category {i}"),
                "description": "Tools", "parent_id": null, "active": true}))
            .expect("a category");
            let out = CategoryCreateNode
                .run(&fx.ctx, CreateInput { record })
                .await
                .unwrap_or_else(|e| self.fail("creating a category", &e));
            self.categories.push(out.record.id());
        }
        for i in 0..6 {
            let category = self.categories[i % 3];
            let record = serde_json::from_value(json!({"sku": format!("TI-{i:04}"), "name": format!("Tool {i}"),
                "description": "A tool every tenant may recommend", "price": 10.0 + i as f64, "currency": "EUR", "stock": 5,
                "weight_kg": null, "active": true, "category_id": category, "manufacturer_id": null, "supplier_id": null,
                "attributes": {}}))
            .expect("a product");
            let out = ProductCreateNode
                .run(&fx.ctx, CreateInput { record })
                .await
                .unwrap_or_else(|e| self.fail("creating a product", &e));
            self.products.push(out.record.id());
        }
        for t in 0..TENANTS.len() {
            for i in 0..3 {
                let mut new = self.new_row(Kind::Customer, t, false, false);
                if i == 0 {
                    new.row.insert("email".into(), json!("shared@mail.example"));
                }
                self.create_row::<Customer>(t, new.row).await;
            }
            for kind in [Kind::Project, Kind::Quote, Kind::Recommendation] {
                for i in 0..3 {
                    let mut new = self.new_row(kind, t, false, false);
                    if kind == Kind::Quote && i == 0 {
                        new.row.insert("number".into(), json!("Q-2000-00001"));
                    }
                    by_kind!(kind, self.create_row(t, new.row));
                }
            }
        }
        for (table, column, value) in [("customers", "email", "shared@mail.example"), ("quotes", "number", "Q-2000-00001")] {
            let rows = fx
                .sql(
                    &format!("SELECT tenant_id FROM {table} WHERE {column} = $1 ORDER BY tenant_id"),
                    vec![value.into()],
                )
                .await;
            let tenants: Vec<String> = rows.iter().map(|r| r.try_get("", "tenant_id").expect("a tenant")).collect();
            assert_eq!(tenants, TENANTS, "{table}.{column} {value} is one row per tenant");
        }
        self.tally.seeded = KINDS.iter().map(|k| self.oracle.of(*k).len()).sum::<usize>() + 9;
    }

    /// Creates `row` for `t` (it must be accepted) and records it.
    async fn create_row<M: Subject>(&mut self, t: usize, row: Map<String, Json>) -> i64 {
        let kind = M::KIND;
        let key = kind.unique_key().and_then(|k| row[k].as_str()).map(str::to_owned);
        let record: M::New = serde_json::from_value(Json::Object(row.clone())).unwrap_or_else(|e| panic!("{kind:?} row {row:?}: {e}"));
        let out = M::Create::default()
            .run(&self.ctx(t), CreateInput { record })
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Create for {} of {row:?}", TENANTS[t]), &e));
        let id = out.record.id();
        if out.record.version != 1 {
            self.violation(OWN_ROWS, format!("a new {kind:?} {id} has version {}", out.record.version));
        }
        self.adopt(kind, t, id, out.record.version, key).await;
        id
    }

    /// Points a row that was given another tenant's row as a foreign key back at `t`'s own
    /// rows, so one accepted foreign key is reported once and not again by later checks.
    async fn repair<M: Subject>(&mut self, t: usize, id: i64, field: &'static str) {
        let kind = M::KIND;
        let (_, target, required) = *kind.tenant_refs().iter().find(|r| r.0 == field).expect("a relation field");
        let value = match self.pick_id(target, t, true, &[Live]) {
            Some(own) => json!(own),
            None if !required => Json::Null,
            None => {
                let out = M::Delete::default()
                    .run(&self.ctx(t), delete_by_id(id, true))
                    .await
                    .unwrap_or_else(|e| self.fail("deleting a row that names another tenant's row", &e));
                assert_eq!(out.deleted, 1);
                self.oracle.get_mut(kind, id).expect("a known row").state = Gone;
                return;
            }
        };
        let mut patch = Map::new();
        patch.insert(field.to_owned(), value);
        let out = M::Update::default()
            .run(&self.ctx(t), patch_by_id(id, patch))
            .await
            .unwrap_or_else(|e| self.fail("repointing a foreign key at the tenant's own row", &e));
        let version = out.record.expect("the updated row").version;
        self.oracle.get_mut(kind, id).expect("a known row").version = version;
    }

    /// Runs the random operations, with a checkpoint every [`CHECK_EVERY`].
    async fn run(&mut self, operations: usize) {
        let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
        for step in 0..operations {
            self.step = step;
            let t = self.rng.random_range(0..TENANTS.len());
            let mut kind = self.pick(&KINDS).unwrap();
            let mut roll = self.rng.random_range(0..total);
            let op = WEIGHTS
                .iter()
                .find(|(_, w)| {
                    let hit = roll < *w;
                    roll = roll.saturating_sub(*w);
                    hit
                })
                .map(|(op, _)| *op)
                .expect("a weighted pick");
            if matches!(op, Op::Create | Op::BulkUpsert) {
                // A row that must point at a parent the tenant lacks: create the parent first.
                while !self.can_create(kind, t) {
                    kind = kind.tenant_refs().iter().find(|r| r.2).expect("a required parent").1;
                }
            }
            by_kind!(kind, self.operate(t, op));
            if (step + 1) % CHECK_EVERY == 0 {
                self.checkpoint().await;
            }
        }
    }

    async fn operate<M: Subject>(&mut self, t: usize, op: Op) {
        match op {
            Op::Create => self.create::<M>(t).await,
            Op::Read => self.read::<M>(t).await,
            Op::Update => self.update::<M>(t).await,
            Op::Delete => self.delete::<M>(t).await,
            Op::List => self.list::<M>(t).await,
            Op::BulkUpsert => self.bulk::<M>(t).await,
            Op::Search => self.search::<M>(t).await,
            Op::Graph => self.graph::<M>(t).await,
            Op::Aggregate => self.aggregate::<M>(t).await,
        }
    }

    /// Create: a new row, sometimes with another tenant's unique key (accepted) or with a
    /// foreign key naming another tenant's row (refused).
    async fn create<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let foreign_ref = !kind.tenant_refs().is_empty() && self.chance(0.15);
        let shared_key = kind.unique_key().is_some() && self.chance(0.25);
        let new = self.new_row(kind, t, foreign_ref, shared_key);
        self.tally.run(Op::Create);
        let Some((field, target)) = new.foreign_ref else {
            if new.shared_key {
                self.tally.shared_keys += 1;
            }
            self.create_row::<M>(t, new.row).await;
            return;
        };
        self.tally.cross(Op::Create);
        let table = kind.meta().table;
        let before = self.fx.count(table, "").await;
        let key = kind.unique_key().and_then(|k| new.row[k].as_str()).map(str::to_owned);
        let record: M::New = serde_json::from_value(Json::Object(new.row.clone())).expect("a valid row");
        match M::Create::default().run(&self.ctx(t), CreateInput { record }).await {
            Err(_) => {
                self.tally.refused += 1;
                let after = self.fx.count(table, "").await;
                if after != before {
                    self.violation(FOREIGN_WRITE, format!("a refused {kind:?}Create still changed {table}"));
                }
            }
            Ok(out) => {
                let id = out.record.id();
                self.violation(
                    FOREIGN_KEY,
                    format!(
                        "{kind:?}Create for {} stored {kind:?} {id} with {field} = {target}, a row of another tenant",
                        TENANTS[t]
                    ),
                );
                self.adopt(kind, t, id, out.record.version, key).await;
                self.repair::<M>(t, id, field).await;
            }
        }
    }

    /// Read by id: the caller's rows (live, soft-deleted, gone) and other tenants' rows, the
    /// latter sometimes just cached by their owner.
    async fn read<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        let target = if roll < 45 {
            self.pick_id(kind, t, true, &[Live])
        } else if roll < 55 {
            self.pick_id(kind, t, true, &[SoftDeleted, Gone])
        } else {
            self.pick_id(kind, t, false, &[Live, SoftDeleted, Gone])
        };
        let Some(id) = target.or_else(|| self.pick_id(kind, t, true, &[Live])) else {
            return;
        };
        let include_deleted = kind.meta().soft_delete && self.chance(0.2);
        let owner = self.oracle.get(kind, id).expect("a known row").tenant;
        let foreign = owner != t;
        if foreign && self.chance(0.5) {
            // The owner reads first, so the row sits in the cache when the other tenant asks.
            self.tally.run(Op::Read);
            M::Read::default()
                .run(
                    &self.ctx(owner),
                    ReadInput {
                        id,
                        include_deleted: false,
                        required: false,
                    },
                )
                .await
                .unwrap_or_else(|e| self.fail("the owner's read", &e));
        }
        self.tally.run(Op::Read);
        let out = M::Read::default()
            .run(
                &self.ctx(t),
                ReadInput {
                    id,
                    include_deleted,
                    required: false,
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Read of {id} for {}", TENANTS[t]), &e));
        if foreign {
            self.tally.cross(Op::Read);
        }
        let o = self.oracle.get(kind, id).cloned().expect("a known row");
        let visible = !foreign && (o.state == Live || (include_deleted && o.state == SoftDeleted));
        match out.record {
            Some(r) if r.id() != id => self.violation(OWN_ROWS, format!("{kind:?}Read of {id} answered with row {}", r.id())),
            Some(r) => {
                let answer = format!("{kind:?}Read ({:?})", out.cache);
                let own = self.check_returned(kind, t, id, include_deleted, &answer);
                if own && r.version != o.version {
                    self.violation(
                        OWN_ROWS,
                        format!("{answer} of {id} gave version {}, the writes say {}", r.version, o.version),
                    );
                }
            }
            None if foreign => self.tally.contained += 1,
            None if visible => self.violation(OWN_ROWS, format!("{kind:?}Read of own {:?} row {id} found nothing", o.state)),
            None => {}
        }
    }

    /// Update: by id (own rows; other tenants' rows; another tenant's unique key; a foreign
    /// key naming another tenant's row) or by a filter naming several tenants' rows.
    async fn update<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        if roll < 30 {
            return self.update_by_filter::<M>(t).await;
        }
        if roll < 60
            && let Some(id) = self.pick_id(kind, t, false, &[Live, SoftDeleted])
        {
            return self.update_foreign::<M>(t, id).await;
        }
        if (60..72).contains(&roll) && kind.unique_key().is_some() {
            return self.update_shared_key::<M>(t).await;
        }
        if (72..84).contains(&roll) && !kind.tenant_refs().is_empty() {
            return self.update_foreign_ref::<M>(t).await;
        }
        self.update_own::<M>(t).await;
    }

    async fn update_own<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let Some(id) = self.pick_id(kind, t, true, &[Live]) else {
            return;
        };
        let version = self.oracle.get(kind, id).expect("a known row").version;
        let patch = self.patch(kind);
        let expected_version = self.chance(0.5).then_some(version);
        self.tally.run(Op::Update);
        let out = M::Update::default()
            .run(
                &self.ctx(t),
                UpdateInput {
                    id: Some(id),
                    expected_version,
                    filter: None,
                    patch: patch.clone(),
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Update of own row {id} with {patch:?}"), &e));
        self.own_update_done(kind, id, version, out.updated, out.record.map(|r| (r.id(), r.version)));
    }

    /// Checks an update of the caller's row `id` (at `version` before) and records it.
    fn own_update_done(&mut self, kind: Kind, id: i64, version: i64, updated: u64, record: Option<(i64, i64)>) {
        let want = if updated > 0 { version + 1 } else { version };
        match record {
            Some((got_id, got_version)) if got_id == id && got_version == want => {}
            other => self.violation(
                OWN_ROWS,
                format!("updating own {kind:?} {id} at version {version} ({updated} updated) returned {other:?}"),
            ),
        }
        if let Some(o) = self.oracle.get_mut(kind, id) {
            o.version = want;
        }
    }

    async fn update_foreign<M: Subject>(&mut self, t: usize, id: i64) {
        let kind = M::KIND;
        let before = self.stored(kind, id).await;
        let version = self.oracle.get(kind, id).expect("a known row").version;
        let expected_version = self.chance(0.3).then_some(version + 1);
        let patch = self.patch(kind);
        self.tally.run(Op::Update);
        self.tally.cross(Op::Update);
        let result = M::Update::default()
            .run(
                &self.ctx(t),
                UpdateInput {
                    id: Some(id),
                    expected_version,
                    filter: None,
                    patch,
                },
            )
            .await;
        match result {
            Err(Error::NotFound { .. }) => self.tally.refused += 1,
            // A version conflict would tell the caller the row exists, and at which version.
            Err(e) => self.violation(FOREIGN_READ, format!("{kind:?}Update of another tenant's {id} answered: {e}")),
            Ok(out) => self.violation(
                FOREIGN_WRITE,
                format!(
                    "{kind:?}Update by {} of another tenant's {id} returned {} updated",
                    TENANTS[t], out.updated
                ),
            ),
        }
        let after = self.stored(kind, id).await;
        self.unchanged(kind, id, &before, &after, &format!("{kind:?}Update by {}", TENANTS[t]));
    }

    async fn update_shared_key<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let key_field = kind.unique_key().expect("a unique key");
        let keys = self.oracle.foreign_keys(kind, t);
        let (Some(key), Some(id)) = (self.pick(&keys), self.pick_id(kind, t, true, &[Live])) else {
            return self.update_own::<M>(t).await;
        };
        let version = self.oracle.get(kind, id).expect("a known row").version;
        let mut patch = Map::new();
        patch.insert(key_field.to_owned(), json!(key));
        self.tally.run(Op::Update);
        self.tally.shared_keys += 1;
        let result = M::Update::default().run(&self.ctx(t), patch_by_id(id, patch)).await;
        match result {
            Ok(out) => {
                self.own_update_done(kind, id, version, out.updated, out.record.map(|r| (r.id(), r.version)));
                self.oracle.get_mut(kind, id).expect("a known row").key = Some(key);
            }
            Err(e) => self.violation(
                SHARED_KEY,
                format!(
                    "{kind:?}Update of {}'s {id} to {key_field} {key} (held by another tenant only): {e}",
                    TENANTS[t]
                ),
            ),
        }
    }

    async fn update_foreign_ref<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let (field, target, _) = self.pick(kind.tenant_refs()).expect("a relation");
        let (Some(id), Some(parent)) = (self.pick_id(kind, t, true, &[Live]), self.pick_id(target, t, false, &[Live])) else {
            return self.update_own::<M>(t).await;
        };
        let before = self.stored(kind, id).await;
        let mut patch = Map::new();
        patch.insert(field.to_owned(), json!(parent));
        self.tally.run(Op::Update);
        self.tally.cross(Op::Update);
        let result = M::Update::default().run(&self.ctx(t), patch_by_id(id, patch)).await;
        match result {
            Err(_) => {
                self.tally.refused += 1;
                let after = self.stored(kind, id).await;
                if before != after {
                    self.violation(OWN_ROWS, format!("a refused {kind:?}Update still changed {id}"));
                }
            }
            Ok(out) => {
                self.violation(
                    FOREIGN_KEY,
                    format!(
                        "{kind:?}Update of {}'s {id} set {field} = {parent}, a {target:?} of another tenant",
                        TENANTS[t]
                    ),
                );
                if let Some(r) = out.record {
                    self.oracle.get_mut(kind, id).expect("a known row").version = r.version;
                }
                self.repair::<M>(t, id, field).await;
            }
        }
    }

    async fn update_by_filter<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let visible = self.oracle.visible(kind, t, false);
        let probe = self.probe(kind, t, &visible, true, true);
        let before = self.snapshot_of(kind, &probe.foreign).await;
        let patch = self.patch(kind);
        self.tally.run(Op::Update);
        if probe.crosses {
            self.tally.cross(Op::Update);
        }
        let result = M::Update::default()
            .run(
                &self.ctx(t),
                UpdateInput {
                    id: None,
                    expected_version: None,
                    filter: Some(probe.filter.clone()),
                    patch,
                },
            )
            .await;
        if let Expect::Refused = probe.expect {
            self.refused_probe(Op::Update, kind, &result, &probe.filter);
        }
        let ids = match result {
            Ok(out) => out.ids,
            Err(_) if matches!(probe.expect, Expect::Refused) => Vec::new(),
            Err(e) => self.fail(&format!("{kind:?}Update by filter {}", probe.filter.to_json()), &e),
        };
        let answer = format!("{kind:?}Update by filter {}", probe.filter.to_json());
        self.written_by_filter(kind, t, &ids, &visible, &probe, &answer, |o| o.version += 1);
        let after = self.snapshot_of(kind, &probe.foreign).await;
        for ((id, b), a) in probe.foreign.iter().zip(&before).zip(&after) {
            self.unchanged(kind, *id, b, a, &answer);
        }
    }

    /// Checks the ids a write by filter reported against the probe, and records the write.
    #[allow(clippy::too_many_arguments)]
    fn written_by_filter(
        &mut self,
        kind: Kind,
        t: usize,
        ids: &[i64],
        visible: &BTreeSet<i64>,
        probe: &Probe,
        answer: &str,
        apply: impl Fn(&mut Owned),
    ) {
        let mut clean = true;
        for &id in ids {
            match self.oracle.get(kind, id).map(|o| o.tenant) {
                Some(owner) if owner == t => {
                    if !visible.contains(&id) {
                        self.violation(OWN_ROWS, format!("{answer} wrote own {kind:?} {id}, which it cannot see"));
                    }
                    apply(self.oracle.get_mut(kind, id).expect("a known row"));
                }
                Some(owner) => {
                    clean = false;
                    self.violation(
                        FOREIGN_WRITE,
                        format!("{answer} for {} wrote {kind:?} {id} of {}", TENANTS[t], TENANTS[owner]),
                    );
                }
                None => {
                    clean = false;
                    self.violation(STORES, format!("{answer} wrote {kind:?} {id}, which no write reported"));
                }
            }
        }
        let got: BTreeSet<i64> = ids.iter().copied().collect();
        if let Expect::Exactly(want) = &probe.expect
            && clean
            && &got != want
        {
            self.violation(OWN_ROWS, format!("{answer} wrote {got:?}, the oracle says {want:?}"));
        }
        if probe.crosses && clean && !matches!(probe.expect, Expect::Refused) {
            self.tally.contained += 1;
        }
    }

    /// Delete: by id (own rows, other tenants' rows), soft or hard, or by a filter naming
    /// several tenants' rows.
    async fn delete<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let soft_model = kind.meta().soft_delete;
        let hard = !soft_model || self.chance(0.3);
        let roll = self.rng.random_range(0..100);
        self.tally.run(Op::Delete);
        if roll < 35
            && let Some(id) = self.pick_id(kind, t, false, &[Live, SoftDeleted])
        {
            self.tally.cross(Op::Delete);
            let before = self.stored(kind, id).await;
            let result = M::Delete::default().run(&self.ctx(t), delete_by_id(id, hard)).await;
            match result {
                Ok(out) if out.deleted == 0 && out.ids.is_empty() => self.tally.refused += 1,
                Err(Error::NotFound { .. }) => self.tally.refused += 1,
                Ok(out) => self.violation(
                    FOREIGN_WRITE,
                    format!("{kind:?}Delete by {} of another tenant's {id} deleted {:?}", TENANTS[t], out.ids),
                ),
                Err(e) => self.fail(&format!("{kind:?}Delete of another tenant's {id}"), &e),
            }
            let after = self.stored(kind, id).await;
            self.unchanged(kind, id, &before, &after, &format!("{kind:?}Delete by {}", TENANTS[t]));
            return;
        }
        if roll < 75 {
            let states: &[State] = if hard && soft_model { &[Live, SoftDeleted] } else { &[Live] };
            if let Some(id) = self.pick_id(kind, t, true, states) {
                let out = match M::Delete::default().run(&self.ctx(t), delete_by_id(id, hard)).await {
                    Ok(out) => out,
                    Err(e) if restricted(&e) => {
                        // Rows of other models still name it (`on_delete` restrict): nothing
                        // was written, which the next checkpoint confirms.
                        self.tally.restricted += 1;
                        return;
                    }
                    Err(e) => self.fail(&format!("{kind:?}Delete of own {id}"), &e),
                };
                if out.ids != [id] {
                    self.violation(OWN_ROWS, format!("{kind:?}Delete of own {id} (hard: {hard}) deleted {:?}", out.ids));
                }
                let o = self.oracle.get_mut(kind, id).expect("a known row");
                if out.soft {
                    o.state = SoftDeleted;
                    o.version += 1;
                } else {
                    o.state = Gone;
                }
                self.dependents_changed(t, &out.dependents, &format!("{kind:?}Delete of own {id}"));
                return;
            }
        }
        let visible = self.oracle.visible(kind, t, hard);
        let probe = self.probe(kind, t, &visible, false, false);
        if probe.crosses {
            self.tally.cross(Op::Delete);
        }
        let before = self.snapshot_of(kind, &probe.foreign).await;
        let result = M::Delete::default()
            .run(
                &self.ctx(t),
                DeleteInput {
                    id: None,
                    filter: Some(probe.filter.clone()),
                    hard,
                },
            )
            .await;
        if let Expect::Refused = probe.expect {
            self.refused_probe(Op::Delete, kind, &result, &probe.filter);
        }
        let answer = format!("{kind:?}Delete (hard: {hard}) by filter {}", probe.filter.to_json());
        let (ids, soft, dependents) = match result {
            Ok(out) => (out.ids, out.soft, out.dependents),
            Err(_) if matches!(probe.expect, Expect::Refused) => (Vec::new(), false, Vec::new()),
            Err(e) if restricted(&e) => {
                // One of the rows is still named (`on_delete` restrict): the whole delete is
                // refused and nothing was written.
                self.tally.restricted += 1;
                let after = self.snapshot_of(kind, &probe.foreign).await;
                for ((id, b), a) in probe.foreign.iter().zip(&before).zip(&after) {
                    self.unchanged(kind, *id, b, a, &answer);
                }
                return;
            }
            Err(e) => self.fail(&format!("{kind:?}Delete by filter {}", probe.filter.to_json()), &e),
        };
        self.written_by_filter(kind, t, &ids, &visible, &probe, &answer, |o| {
            if soft {
                o.state = SoftDeleted;
                o.version += 1;
            } else {
                o.state = Gone;
            }
        });
        self.dependents_changed(t, &dependents, &answer);
        let after = self.snapshot_of(kind, &probe.foreign).await;
        for ((id, b), a) in probe.foreign.iter().zip(&before).zip(&after) {
            self.unchanged(kind, *id, b, a, &answer);
        }
    }

    /// Records in the oracle what a delete reported doing to the rows that named the rows it
    /// removed: removed (`cascade`) or their foreign key cleared (`set_null`, a new version).
    /// They must be the deleting tenant's own: the foreign keys between multi-tenant models
    /// include the tenant.
    fn dependents_changed(&mut self, t: usize, dependents: &[DependentRows], answer: &str) {
        for group in dependents {
            let Some(kind) = Kind::by_name(&group.model) else { continue };
            for &id in &group.ids {
                match self.oracle.get(kind, id).map(|o| o.tenant) {
                    Some(owner) if owner == t => {}
                    Some(owner) => self.violation(
                        FOREIGN_WRITE,
                        format!(
                            "{answer} for {} changed {kind:?} {id} of {} ({})",
                            TENANTS[t], TENANTS[owner], group.relation
                        ),
                    ),
                    None => self.violation(STORES, format!("{answer} changed {kind:?} {id}, which no write reported")),
                }
                let o = self.oracle.get_mut(kind, id).expect("a known row");
                match group.on_delete {
                    OnDelete::Cascade => o.state = Gone,
                    OnDelete::SetNull => o.version += 1,
                    OnDelete::Restrict => {}
                }
            }
        }
    }

    /// List: every page of the caller's rows (sorted, paged, with the total), a filter naming
    /// several tenants' rows, or a sort on `tenant_id`.
    async fn list<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        self.tally.run(Op::List);
        if roll < 30 {
            return self.list_all::<M>(t).await;
        }
        if roll >= 92 {
            self.tally.cross(Op::List);
            let sort = vec![SortKey::parse(if self.chance(0.5) { "tenant_id" } else { "-tenant_id" })];
            let result = M::List::default()
                .run(
                    &self.ctx(t),
                    ListInput {
                        sort,
                        ..Default::default()
                    },
                )
                .await;
            match result {
                Err(Error::InvalidInput { .. }) => self.tally.refused += 1,
                Err(e) => self.violation(TENANT_COLUMN, format!("{kind:?}List sorted by tenant_id failed in a store: {e}")),
                Ok(_) => self.violation(TENANT_COLUMN, format!("{kind:?}List sorted by tenant_id ran")),
            }
            return;
        }
        let visible = self.oracle.visible(kind, t, false);
        let probe = self.probe(kind, t, &visible, true, true);
        if probe.crosses {
            self.tally.cross(Op::List);
        }
        let result = M::List::default()
            .run(
                &self.ctx(t),
                ListInput {
                    filter: Some(probe.filter.clone()),
                    limit: Some(1000),
                    with_total: self.chance(0.5),
                    ..Default::default()
                },
            )
            .await;
        if let Expect::Refused = probe.expect {
            return self.refused_probe(Op::List, kind, &result, &probe.filter);
        }
        let out = result.unwrap_or_else(|e| self.fail(&format!("{kind:?}List with {}", probe.filter.to_json()), &e));
        let answer = format!("{kind:?}List with {}", probe.filter.to_json());
        let ids: Vec<i64> = out.records.iter().map(Record::id).collect();
        self.answered(kind, t, &ids, false, &visible, &probe, &answer, true);
        if let Some(total) = out.total
            && total as usize != ids.len()
        {
            let category = if total as usize > ids.len() { FOREIGN_READ } else { OWN_ROWS };
            self.violation(category, format!("{answer} returned {} rows and a total of {total}", ids.len()));
        }
    }

    /// Checks the rows an answer returned against the probe. `exact`: the answer holds every
    /// row the filter admits (List, Aggregate), not just some (Search).
    #[allow(clippy::too_many_arguments)]
    fn answered(
        &mut self,
        kind: Kind,
        t: usize,
        ids: &[i64],
        include_deleted: bool,
        visible: &BTreeSet<i64>,
        probe: &Probe,
        answer: &str,
        exact: bool,
    ) {
        let mut clean = true;
        for &id in ids {
            clean &= self.check_returned(kind, t, id, include_deleted, answer);
        }
        let got: BTreeSet<i64> = ids.iter().copied().collect();
        if got.len() != ids.len() {
            self.violation(OWN_ROWS, format!("{answer} returned a row twice: {ids:?}"));
        }
        if clean {
            match &probe.expect {
                Expect::Exactly(want) if exact && &got != want => {
                    self.violation(OWN_ROWS, format!("{answer} returned {got:?}, the oracle says {want:?}"))
                }
                Expect::Exactly(want) if !got.is_subset(want) => {
                    self.violation(OWN_ROWS, format!("{answer} returned {got:?}, outside {want:?}"))
                }
                Expect::Within if !got.is_subset(visible) => {
                    self.violation(OWN_ROWS, format!("{answer} returned {got:?}, not all visible"))
                }
                _ => {}
            }
            if probe.crosses {
                self.tally.contained += 1;
            }
        }
    }

    /// Every page of the caller's rows, optionally with soft-deleted ones, in a random order.
    async fn list_all<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let include_deleted = kind.meta().soft_delete && self.chance(0.25);
        let group = kind.group_field();
        let sort: Vec<SortKey> = match self.rng.random_range(0..4) {
            0 => Vec::new(),
            1 => vec![SortKey::parse("-id")],
            2 => vec![SortKey::parse(group)],
            _ => vec![SortKey::parse(&format!("-{group}"))],
        };
        let limit = self.rng.random_range(5..=40);
        let mut seen: Vec<i64> = Vec::new();
        let mut after: Option<String> = None;
        let mut total = None;
        loop {
            let out = M::List::default()
                .run(
                    &self.ctx(t),
                    ListInput {
                        filter: None,
                        sort: sort.clone(),
                        limit: Some(limit),
                        after: after.clone(),
                        with_total: after.is_none(),
                        include_deleted,
                    },
                )
                .await
                .unwrap_or_else(|e| self.fail(&format!("{kind:?}List page after {after:?}"), &e));
            if after.is_none() {
                total = out.total;
            }
            seen.extend(out.records.iter().map(Record::id));
            match out.next_cursor {
                Some(cursor) if seen.len() < 100_000 => after = Some(cursor),
                _ => break,
            }
        }
        let want = self.oracle.visible(kind, t, include_deleted);
        let answer = format!("{kind:?}List of every page (limit {limit}, include_deleted {include_deleted})");
        let probe = Probe {
            filter: Filter::all(),
            expect: Expect::Exactly(want.clone()),
            foreign: Vec::new(),
            crosses: false,
        };
        self.answered(kind, t, &seen, include_deleted, &want, &probe, &answer, true);
        if total != Some(want.len() as u64) {
            let category = if total.is_some_and(|n| n as usize > want.len()) {
                FOREIGN_READ
            } else {
                OWN_ROWS
            };
            self.violation(category, format!("{answer}: total {total:?}, the oracle counts {}", want.len()));
        }
    }

    /// Aggregate: counts and id extremes of the caller's rows, grouped or filtered by
    /// filters naming several tenants' rows, or grouped by `tenant_id`.
    async fn aggregate<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        self.tally.run(Op::Aggregate);
        let metric = |op, field: Option<&str>| Metric {
            op,
            field: field.map(str::to_owned),
        };
        if roll < 30 {
            let include_deleted = kind.meta().soft_delete && self.chance(0.3);
            let want = self.oracle.visible(kind, t, include_deleted);
            let out = M::Aggregate::default()
                .run(
                    &self.ctx(t),
                    AggregateInput {
                        metrics: vec![
                            metric(AggregateOp::Count, None),
                            metric(AggregateOp::Min, Some("id")),
                            metric(AggregateOp::Max, Some("id")),
                        ],
                        include_deleted,
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| self.fail(&format!("{kind:?}Aggregate"), &e));
            let got = &out.groups[0];
            let expected = json!({"count": want.len(), "min_id": want.first(), "max_id": want.last()});
            if Json::Object(got.clone()) != expected {
                let category = if got["count"].as_u64().is_some_and(|n| n as usize > want.len()) {
                    FOREIGN_READ
                } else {
                    OWN_ROWS
                };
                self.violation(
                    category,
                    format!(
                        "{kind:?}Aggregate for {} (include_deleted {include_deleted}) gave {got:?}, the oracle says {expected}",
                        TENANTS[t]
                    ),
                );
            }
            return;
        }
        if roll < 55 {
            let want = self.oracle.visible(kind, t, false);
            let out = M::Aggregate::default()
                .run(
                    &self.ctx(t),
                    AggregateInput {
                        group_by: vec![kind.group_field().to_owned()],
                        ..Default::default()
                    },
                )
                .await
                .unwrap_or_else(|e| self.fail(&format!("{kind:?}Aggregate by {}", kind.group_field()), &e));
            let sum: u64 = out.groups.iter().map(|g| g["count"].as_u64().unwrap_or(0)).sum();
            if sum as usize != want.len() {
                let category = if sum as usize > want.len() { FOREIGN_READ } else { OWN_ROWS };
                self.violation(
                    category,
                    format!(
                        "{kind:?}Aggregate by {} for {} counted {sum}, the oracle {}",
                        kind.group_field(),
                        TENANTS[t],
                        want.len()
                    ),
                );
            }
            return;
        }
        if roll >= 90 {
            self.tally.cross(Op::Aggregate);
            let input = if self.chance(0.5) {
                AggregateInput {
                    group_by: vec!["tenant_id".into()],
                    ..Default::default()
                }
            } else {
                AggregateInput {
                    metrics: vec![metric(AggregateOp::Min, Some("tenant_id"))],
                    ..Default::default()
                }
            };
            let result = M::Aggregate::default().run(&self.ctx(t), input).await;
            match result {
                Err(Error::InvalidInput { .. }) => self.tally.refused += 1,
                Err(e) => self.violation(TENANT_COLUMN, format!("{kind:?}Aggregate over tenant_id failed in a store: {e}")),
                Ok(out) => self.violation(TENANT_COLUMN, format!("{kind:?}Aggregate over tenant_id gave {:?}", out.groups)),
            }
            return;
        }
        let visible = self.oracle.visible(kind, t, false);
        let probe = self.probe(kind, t, &visible, true, true);
        if probe.crosses {
            self.tally.cross(Op::Aggregate);
        }
        let result = M::Aggregate::default()
            .run(
                &self.ctx(t),
                AggregateInput {
                    filter: Some(probe.filter.clone()),
                    ..Default::default()
                },
            )
            .await;
        if let Expect::Refused = probe.expect {
            return self.refused_probe(Op::Aggregate, kind, &result, &probe.filter);
        }
        let answer = format!("{kind:?}Aggregate for {} with {}", TENANTS[t], probe.filter.to_json());
        let out = result.unwrap_or_else(|e| self.fail(&answer, &e));
        let count = out.groups[0]["count"].as_u64().unwrap_or(u64::MAX) as usize;
        let bad = match &probe.expect {
            Expect::Exactly(want) => count != want.len(),
            _ => count > visible.len(),
        };
        if bad {
            let category = if count > visible.len() { FOREIGN_READ } else { OWN_ROWS };
            self.violation(category, format!("{answer} counted {count}"));
        } else if probe.crosses {
            self.tally.contained += 1;
        }
    }

    /// The text the vector store embeds for a row, from the row as plain SQL reads it.
    async fn document(&self, kind: Kind, id: i64) -> Option<String> {
        let row = self.stored(kind, id).await?;
        let parts: Vec<&str> = kind
            .meta()
            .fields
            .iter()
            .filter(|f| f.embed)
            .filter_map(|f| row[f.name].as_str())
            .collect();
        Some(parts.join("\n"))
    }

    /// Search: the text of a row of the caller or of another tenant, with no filter or with
    /// a filter naming several tenants' rows; every hit must be the caller's.
    async fn search<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        let own_target = self.chance(0.4);
        let Some(target) = self.pick_id(kind, t, own_target, &[Live]) else {
            return;
        };
        let Some(query) = self.document(kind, target).await else {
            return;
        };
        let top_k = self.rng.random_range(1..=20);
        let visible = self.oracle.visible(kind, t, false);
        let probe = if roll < 45 {
            Probe {
                filter: Filter::all(),
                expect: Expect::Within,
                foreign: Vec::new(),
                crosses: !own_target,
            }
        } else {
            self.probe(kind, t, &visible, true, false)
        };
        let filtered = roll >= 45;
        self.tally.run(Op::Search);
        if probe.crosses {
            self.tally.cross(Op::Search);
        }
        let result = M::Search::default()
            .run(
                &self.ctx(t),
                SearchInput {
                    query: Some(query.clone()),
                    top_k: Some(top_k),
                    filter: filtered.then(|| probe.filter.clone()),
                    ..Default::default()
                },
            )
            .await;
        if let Expect::Refused = probe.expect {
            return self.refused_probe(Op::Search, kind, &result, &probe.filter);
        }
        let answer = format!(
            "{kind:?}Search for {} with the text of {kind:?} {target} ({}){}",
            TENANTS[t],
            if own_target { "own" } else { "another tenant's" },
            if filtered {
                format!(" and {}", probe.filter.to_json())
            } else {
                String::new()
            }
        );
        let out = result.unwrap_or_else(|e| self.fail(&answer, &e));
        let ids: Vec<i64> = out.hits.iter().map(|h| h.record.id()).collect();
        self.tally.search_hits += ids.len();
        self.answered(kind, t, &ids, false, &visible, &probe, &answer, false);
        // An update by filter gives every row it matches the same text, so the row may tie
        // with others at distance 0 and be crowded out of a short list.
        let ties = ids.len() == top_k && out.hits.iter().all(|h| h.distance.abs() < 1e-3);
        if own_target && !filtered && !ids.contains(&target) && !ties {
            self.violation(OWN_ROWS, format!("{answer} did not find the row itself: {ids:?}"));
        }
    }

    /// Graph: neighbours and paths from the caller's rows (every tenant row reached must be
    /// the caller's), and links, unlinks, traversals and paths that name another tenant's row
    /// (each must be refused as not found).
    async fn graph<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let roll = self.rng.random_range(0..100);
        let relations = kind.tenant_refs();
        self.tally.run(Op::Graph);
        if roll < 40 || (roll >= 55 && relations.is_empty() && roll < 85) {
            return self.neighbours::<M>(t).await;
        }
        if roll < 55 {
            // Traversing from another tenant's row.
            let Some(id) = self.pick_id(kind, t, false, &[Live]) else { return };
            self.tally.cross(Op::Graph);
            let result = M::Graph::default()
                .run(
                    &self.ctx(t),
                    GraphInput::Neighbors {
                        id,
                        relation: None,
                        direction: Direction::Both,
                        depth: 1,
                        limit: None,
                        hydrate: self.chance(0.5),
                    },
                )
                .await;
            return self.refused_graph(kind, id, result.map(|o| format!("{:?}", o.neighbors)), "neighbours");
        }
        if roll < 85 {
            let (field, target, _) = self.pick(relations).expect("a relation");
            let mut relation = kind.meta().relation_on(field).expect("a declared relation").name;
            if (72..=77).contains(&roll) {
                // Only an optional relation can be unlinked; a required one is refused for any
                // row, which says nothing about whose the row is.
                let meta = kind.meta();
                let optional: Vec<&'static str> = meta
                    .relations
                    .iter()
                    .filter(|r| meta.field(r.field).is_some_and(|f| f.nullable))
                    .map(|r| r.name)
                    .collect();
                let Some(name) = self.pick(&optional) else { return };
                relation = name;
            }
            let (id, target_id, what) = match roll {
                // Linking one's own row to another tenant's row.
                55..=64 => (
                    self.pick_id(kind, t, true, &[Live]),
                    self.pick_id(target, t, false, &[Live]),
                    "link to another tenant's row",
                ),
                // Linking another tenant's row to one's own.
                65..=71 => (
                    self.pick_id(kind, t, false, &[Live]),
                    self.pick_id(target, t, true, &[Live]),
                    "link of another tenant's row",
                ),
                // Unlinking another tenant's row.
                72..=77 => (self.pick_id(kind, t, false, &[Live]), None, "unlink of another tenant's row"),
                // A path to another tenant's row.
                _ => (
                    self.pick_id(kind, t, true, &[Live]),
                    self.pick_id(target, t, false, &[Live]),
                    "path",
                ),
            };
            let Some(id) = id else { return };
            let input = match (what, target_id) {
                ("unlink of another tenant's row", _) => GraphInput::Unlink {
                    id,
                    relation: relation.to_owned(),
                    target_id: None,
                },
                ("path", Some(target_id)) => GraphInput::Path {
                    id,
                    target_model: target.name().to_owned(),
                    target_id,
                    relation: None,
                    max_depth: 3,
                    hydrate: true,
                },
                (_, Some(target_id)) => GraphInput::Link {
                    id,
                    relation: relation.to_owned(),
                    target_id,
                },
                (_, None) => return,
            };
            self.tally.cross(Op::Graph);
            let before = self.stored(kind, id).await;
            let result = M::Graph::default().run(&self.ctx(t), input).await;
            self.refused_graph(
                kind,
                id,
                result.map(|o| format!("{:?} {:?}", o.record.map(|r| r.id()), o.path)),
                what,
            );
            let after = self.stored(kind, id).await;
            self.unchanged(kind, id, &before, &after, &format!("{kind:?}Graph {what} by {}", TENANTS[t]));
            return;
        }
        if roll < 93 {
            return self.path_between_own::<M>(t).await;
        }
        self.link_own::<M>(t).await;
    }

    /// A graph operation naming another tenant's row must fail as not found.
    fn refused_graph(&mut self, kind: Kind, id: i64, result: Result<String, Error>, what: &str) {
        match result {
            Err(Error::NotFound { .. }) => self.tally.refused += 1,
            Err(e) => self.violation(FOREIGN_READ, format!("{kind:?}Graph {what} ({kind:?} {id}) answered: {e}")),
            Ok(out) => self.violation(FOREIGN_READ, format!("{kind:?}Graph {what} ({kind:?} {id}) ran: {out}")),
        }
    }

    /// Neighbours of one of the caller's rows: every tenant row reached must be the caller's
    /// (without hydration too, which would hide a leak of the graph store itself); one hop
    /// with hydration must find only rows the foreign keys in plain SQL justify.
    async fn neighbours<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let Some(id) = self.pick_id(kind, t, true, &[Live]) else { return };
        let direction = self.pick(&[Direction::Out, Direction::In, Direction::Both]).unwrap();
        // Paths through the shared categories and products fan out quickly: both ways stays shallow.
        let depth = match direction {
            Direction::Out => self.rng.random_range(1..=3),
            _ => self.rng.random_range(1..=2),
        };
        let hydrate = self.chance(0.5);
        let out = M::Graph::default()
            .run(
                &self.ctx(t),
                GraphInput::Neighbors {
                    id,
                    relation: None,
                    direction,
                    depth,
                    limit: Some(1000),
                    hydrate,
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Graph neighbours of own {id}"), &e));
        let answer = format!("{kind:?}Graph neighbours of {id} ({direction:?}, depth {depth}, hydrate {hydrate})");
        self.tally.neighbours += out.neighbors.len();
        let mut reached = BTreeSet::new();
        for n in &out.neighbors {
            reached.insert((n.model.clone(), n.id));
            if hydrate && n.record.as_ref().is_none_or(|r| r["id"] != json!(n.id)) {
                self.violation(OWN_ROWS, format!("{answer}: {} {} hydrated as {:?}", n.model, n.id, n.record));
            }
            let Some(k) = Kind::by_name(&n.model) else { continue };
            match self.oracle.get(k, n.id).map(|o| (o.tenant, o.state)) {
                Some((owner, state)) if owner == t => {
                    if hydrate && state != Live {
                        self.violation(OWN_ROWS, format!("{answer} hydrated {k:?} {}, which is {state:?}", n.id));
                    }
                }
                // A row deleted for good leaves nothing to leak: when one of the caller's rows
                // still names its id, the graph holds a bare node of the caller's for the edge.
                Some((_, Gone)) if !hydrate => {}
                Some((owner, _)) => self.violation(
                    FOREIGN_READ,
                    format!("{answer} for {} reached {k:?} {} of {}", TENANTS[t], n.id, TENANTS[owner]),
                ),
                None => self.violation(STORES, format!("{answer} reached {k:?} {}, which no write reported", n.id)),
            }
        }
        if depth == 1 && hydrate && direction == Direction::Both {
            let justified = self.adjacent(kind, id, t).await;
            let unjustified: Vec<_> = reached.difference(&justified).collect();
            if !unjustified.is_empty() {
                self.violation(OWN_ROWS, format!("{answer}: no foreign key in SQL links {unjustified:?}"));
            }
        }
    }

    /// The rows one hop from a row of `t` in plain SQL: the live rows its foreign keys name
    /// (tenant rows of `t` only), and `t`'s live rows whose foreign keys name it.
    async fn adjacent(&self, kind: Kind, id: i64, t: usize) -> BTreeSet<(String, i64)> {
        let mut out = BTreeSet::new();
        let Some(row) = self.stored(kind, id).await else { return out };
        for r in kind.meta().relations {
            let Some(target) = row[r.field].as_i64() else { continue };
            let visible = match Kind::by_name(r.target) {
                Some(k) => self.oracle.get(k, target).is_some_and(|o| o.tenant == t && o.state == Live),
                None => true,
            };
            if visible {
                out.insert((r.target.to_owned(), target));
            }
        }
        for other in KINDS {
            for (field, target, _) in other.tenant_refs() {
                if *target != kind {
                    continue;
                }
                let meta = other.meta();
                let live = if meta.soft_delete { " AND deleted_at IS NULL" } else { "" };
                let rows = self
                    .fx
                    .sql(
                        &format!("SELECT id FROM {} WHERE {field} = $1 AND tenant_id = $2{live}", meta.table),
                        vec![id.into(), TENANTS[t].into()],
                    )
                    .await;
                for r in rows {
                    out.insert((other.name().to_owned(), r.try_get("", "id").expect("an id")));
                }
            }
        }
        out
    }

    /// A shortest path between two of the caller's rows may only cross the caller's rows
    /// (and rows without a tenant).
    async fn path_between_own<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let target_kind = self.pick(&KINDS).unwrap();
        let (Some(id), Some(target_id)) = (self.pick_id(kind, t, true, &[Live]), self.pick_id(target_kind, t, true, &[Live])) else {
            return;
        };
        if target_kind == kind && target_id == id {
            return;
        }
        let out = M::Graph::default()
            .run(
                &self.ctx(t),
                GraphInput::Path {
                    id,
                    target_model: target_kind.name().to_owned(),
                    target_id,
                    relation: None,
                    max_depth: self.rng.random_range(1..=3),
                    hydrate: self.chance(0.5),
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Graph path from {id} to {target_kind:?} {target_id}"), &e));
        let Some(path) = out.path else { return };
        for step in &path.steps {
            let Some(k) = Kind::by_name(&step.model) else { continue };
            match self.oracle.get(k, step.id).map(|o| (o.tenant, o.state)) {
                Some((owner, _)) if owner == t => {}
                Some((_, Gone)) => {}
                owner => self.violation(
                    FOREIGN_READ,
                    format!(
                        "{kind:?}Graph path for {} from {id} to {target_kind:?} {target_id} crossed {k:?} {} of {:?}",
                        TENANTS[t],
                        step.id,
                        owner.map(|o| TENANTS[o.0])
                    ),
                ),
            }
        }
    }

    /// Links one of the caller's rows to another of its rows.
    async fn link_own<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let Some((field, target, _)) = self.pick(kind.tenant_refs()) else {
            return self.neighbours::<M>(t).await;
        };
        let (Some(id), Some(target_id)) = (self.pick_id(kind, t, true, &[Live]), self.pick_id(target, t, true, &[Live])) else {
            return;
        };
        let relation = kind.meta().relation_on(field).expect("a declared relation").name;
        let version = self.oracle.get(kind, id).expect("a known row").version;
        let out = M::Graph::default()
            .run(
                &self.ctx(t),
                GraphInput::Link {
                    id,
                    relation: relation.to_owned(),
                    target_id,
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}Graph link of own {id} to own {target:?} {target_id}"), &e));
        let updated = u64::from(out.changed);
        self.own_update_done(kind, id, version, updated, out.record.map(|r| (r.id(), r.version)));
    }

    /// BulkUpsert: new rows, the caller's rows by id, other tenants' rows by id (each refused
    /// per row), ids of hard-deleted rows, rows by unique key (own keys update, keys only
    /// other tenants hold insert), rows naming another tenant's row as foreign key (refused).
    async fn bulk<M: Subject>(&mut self, t: usize) {
        let kind = M::KIND;
        let key_field = kind.unique_key();
        let by_key = key_field.is_some() && self.chance(0.3);
        let n = self.rng.random_range(1..=5);
        let mut rows = Vec::with_capacity(n);
        let mut plans = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut used_ids = BTreeSet::new();
        let mut used_keys = BTreeSet::new();
        for _ in 0..n {
            let roll = self.rng.random_range(0..100);
            let foreign_ref = roll < 10 && !kind.tenant_refs().is_empty();
            let mut new = self.new_row(kind, t, foreign_ref, !by_key && roll >= 90);
            let mut plan = match new.foreign_ref {
                Some((field, id)) => Plan::ForeignRef(field, id),
                None => Plan::Insert {
                    shared_key: new.shared_key,
                },
            };
            if let Plan::Insert { .. } = plan {
                if by_key {
                    let key_field = key_field.expect("a unique key");
                    if roll < 45 {
                        let own = self.oracle.select(kind, t, true, &[Live, SoftDeleted]);
                        let candidates: Vec<i64> = own
                            .into_iter()
                            .filter(|id| !used_ids.contains(id))
                            .filter(|id| {
                                let key = self.oracle.get(kind, *id).and_then(|o| o.key.clone());
                                key.is_some_and(|k| !used_keys.contains(&k))
                            })
                            .collect();
                        if let Some(id) = self.pick(&candidates) {
                            let key = self.oracle.get(kind, id).and_then(|o| o.key.clone()).expect("a key");
                            new.row.insert(key_field.to_owned(), json!(key));
                            plan = Plan::Update(id);
                        }
                    } else if roll < 75 {
                        let foreign: Vec<String> = self
                            .oracle
                            .foreign_keys(kind, t)
                            .into_iter()
                            .filter(|k| !used_keys.contains(k))
                            .collect();
                        if let Some(key) = self.pick(&foreign) {
                            new.row.insert(key_field.to_owned(), json!(key));
                            plan = Plan::Insert { shared_key: true };
                        }
                    }
                } else if roll < 35 {
                    let foreign: Vec<i64> = self
                        .oracle
                        .select(kind, t, false, &[Live, SoftDeleted])
                        .into_iter()
                        .filter(|id| !used_ids.contains(id))
                        .collect();
                    if let Some(id) = self.pick(&foreign) {
                        new.row.insert("id".into(), json!(id));
                        plan = Plan::ForeignId(id);
                    }
                } else if roll < 55 {
                    let own: Vec<i64> = self
                        .oracle
                        .select(kind, t, true, &[Live, SoftDeleted])
                        .into_iter()
                        .filter(|id| !used_ids.contains(id))
                        .collect();
                    if let Some(id) = self.pick(&own) {
                        new.row.insert("id".into(), json!(id));
                        plan = Plan::Update(id);
                    }
                } else if roll < 62 {
                    let gone: Vec<i64> = self
                        .oracle
                        .of(kind)
                        .iter()
                        .filter(|(id, o)| o.state == Gone && !used_ids.contains(*id))
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(id) = self.pick(&gone) {
                        new.row.insert("id".into(), json!(id));
                        let former = self.oracle.get(kind, id).expect("a known row").tenant;
                        plan = Plan::Takeover { id, former };
                    }
                }
            }
            // Keys must differ within one call, or the call fails as a whole.
            let mut key = key_field.and_then(|k| new.row[k].as_str()).map(str::to_owned);
            if let (Some(k), Some(field)) = (&key, key_field)
                && used_keys.contains(k)
            {
                let fresh = self.fresh_key(kind);
                new.row.insert(field.to_owned(), json!(fresh));
                key = Some(fresh);
                if let Plan::Insert { shared_key } = &mut plan {
                    *shared_key = false;
                }
            }
            if let Some(k) = &key {
                used_keys.insert(k.clone());
            }
            match &plan {
                Plan::Update(id) | Plan::ForeignId(id) | Plan::Takeover { id, .. } => {
                    used_ids.insert(*id);
                }
                _ => {}
            }
            rows.push(Json::Object(new.row));
            plans.push(plan);
            keys.push(key);
        }
        let foreign_ids: Vec<i64> = plans
            .iter()
            .filter_map(|p| match p {
                Plan::ForeignId(id) => Some(*id),
                _ => None,
            })
            .collect();
        let before = self.snapshot_of(kind, &foreign_ids).await;
        let batch_size = self.chance(0.3).then(|| self.rng.random_range(1..=3));
        self.tally.run(Op::BulkUpsert);
        if plans.iter().any(|p| matches!(p, Plan::ForeignId(_) | Plan::ForeignRef(..))) {
            self.tally.cross(Op::BulkUpsert);
        }
        let out = M::BulkUpsert::default()
            .run(
                &self.ctx(t),
                BulkUpsertInput {
                    rows: rows.clone(),
                    conflict_key: if by_key { key_field.map(str::to_owned) } else { None },
                    batch_size,
                },
            )
            .await
            .unwrap_or_else(|e| self.fail(&format!("{kind:?}BulkUpsert of {rows:?}"), &e));
        let answer = format!("{kind:?}BulkUpsert for {} (by key: {by_key})", TENANTS[t]);
        let rejected: BTreeSet<usize> = out.errors.iter().map(|e| e.index).collect();
        let (mut inserted, mut updated) = (0u64, 0u64);
        let mut clean = true;
        for (i, plan) in plans.iter().enumerate() {
            let got = out.ids.get(i).copied().flatten();
            let key = keys[i].clone();
            match *plan {
                Plan::ForeignId(id) => {
                    if got.is_some() || !rejected.contains(&i) {
                        clean = false;
                        self.violation(
                            FOREIGN_WRITE,
                            format!("{answer}: row {i} with another tenant's id {id} came back as {got:?}"),
                        );
                    } else {
                        self.tally.refused += 1;
                    }
                }
                Plan::ForeignRef(field, target) => match got {
                    None => self.tally.refused += 1,
                    Some(id) => {
                        self.violation(
                            FOREIGN_KEY,
                            format!("{answer}: row {i} stored as {kind:?} {id} with {field} = {target}, a row of another tenant"),
                        );
                        let version = self.stored(kind, id).await.and_then(|r| r["version"].as_i64()).unwrap_or(1);
                        if version == 1 {
                            inserted += 1;
                        } else {
                            updated += 1;
                        }
                        self.adopt(kind, t, id, version, key).await;
                        self.repair::<M>(t, id, field).await;
                    }
                },
                Plan::Update(id) => {
                    if got != Some(id) {
                        self.violation(OWN_ROWS, format!("{answer}: row {i} meant for own {id} came back as {got:?}"));
                        continue;
                    }
                    updated += 1;
                    let o = self.oracle.get_mut(kind, id).expect("a known row");
                    o.version += 1;
                    o.state = Live;
                    o.key = key;
                }
                Plan::Takeover { id, former } => {
                    if got != Some(id) {
                        self.violation(OWN_ROWS, format!("{answer}: row {i} with the free id {id} came back as {got:?}"));
                        continue;
                    }
                    inserted += 1;
                    if former != t {
                        self.tally.takeovers += 1;
                    }
                    self.adopt(kind, t, id, 1, key).await;
                }
                Plan::Insert { shared_key } => {
                    let Some(id) = got else {
                        self.violation(
                            if shared_key { SHARED_KEY } else { OWN_ROWS },
                            format!("{answer}: new row {i} was rejected: {:?}", out.errors),
                        );
                        continue;
                    };
                    if shared_key {
                        self.tally.shared_keys += 1;
                    }
                    inserted += 1;
                    self.adopt(kind, t, id, 1, key).await;
                }
            }
        }
        if (out.inserted, out.updated) != (inserted, updated) {
            self.violation(
                OWN_ROWS,
                format!(
                    "{answer}: reported {} inserted and {} updated, the rows say {inserted} and {updated}",
                    out.inserted, out.updated
                ),
            );
        }
        if clean && !foreign_ids.is_empty() {
            self.tally.contained += 1;
        }
        let after = self.snapshot_of(kind, &foreign_ids).await;
        for ((id, b), a) in foreign_ids.iter().zip(&before).zip(&after) {
            self.unchanged(kind, *id, b, a, &answer);
        }
    }

    /// Compares every store with the oracle: each row in plain SQL (tenant, state, version,
    /// unique key, and unchanged since the last checkpoint unless a write reported it), each
    /// tenant's count through the Aggregate node, and each vector document's tenant.
    async fn checkpoint(&mut self) {
        self.tally.checkpoints += 1;
        let stores = self.fx.ctx.stores();
        if stores.outbox().pending_count().await.expect("counting the outbox") > 0 {
            // A projection that lagged (a slow server) is applied now; lag is not what this test is about.
            stores.outbox().sync().await.expect("syncing the outbox");
        }
        let touched = std::mem::take(&mut self.oracle.touched);
        for kind in KINDS {
            let meta = kind.meta();
            let rows = self.fx.all_rows(meta.table).await;
            let previous = self.snapshot.remove(&kind).unwrap_or_default();
            for (id, row) in &rows {
                let Some(o) = self.oracle.get(kind, *id).cloned() else {
                    self.violation(STORES, format!("{kind:?} {id} is stored but no write reported it: {row}"));
                    continue;
                };
                let stored_state = match row.get("deleted_at") {
                    Some(d) if !d.is_null() => SoftDeleted,
                    _ => Live,
                };
                let key = kind.unique_key().map(|k| row[k].clone()).unwrap_or(Json::Null);
                let want_key = o.key.clone().map(Json::from).unwrap_or(Json::Null);
                if row["tenant_id"] != json!(TENANTS[o.tenant]) {
                    self.violation(WRONG_TENANT, format!("{kind:?} {id} of {} is stored as {row}", TENANTS[o.tenant]));
                } else if row["version"].as_i64() != Some(o.version) || stored_state != o.state || key != want_key {
                    self.violation(
                        STORES,
                        format!(
                            "{kind:?} {id}: the writes say {:?} at version {} with key {want_key}; stored {row}",
                            o.state, o.version
                        ),
                    );
                } else if let Some(before) = previous.get(id)
                    && !touched.contains(&(kind, *id))
                    && before != row
                {
                    self.violation(
                        FOREIGN_WRITE,
                        format!("{kind:?} {id} changed with no write reported:\n    {before}\n    {row}"),
                    );
                }
            }
            let missing: Vec<i64> = self
                .oracle
                .of(kind)
                .iter()
                .filter(|(id, o)| o.state != Gone && !rows.contains_key(id))
                .map(|(id, _)| *id)
                .collect();
            if !missing.is_empty() {
                self.violation(STORES, format!("{kind:?} rows the writes reported are not stored: {missing:?}"));
            }
            for (t, tenant) in TENANTS.iter().enumerate() {
                let want = self.oracle.visible(kind, t, false).len() as u64;
                let got = by_kind!(kind, self.count_through_node(t));
                if got != want {
                    let category = if got > want { FOREIGN_READ } else { OWN_ROWS };
                    self.violation(category, format!("{kind:?}Aggregate for {tenant} counts {got}, the oracle {want}"));
                }
            }
            for (doc, (_, metadata)) in self.fx.vector_documents(meta.table).await {
                let owner = doc
                    .parse()
                    .ok()
                    .and_then(|id| self.oracle.get(kind, id))
                    .map(|o| (o.tenant, o.state));
                match owner {
                    Some((tenant, Live)) if metadata.get("tenant_id") == Some(&json!(TENANTS[tenant])) => {}
                    other => self.violation(
                        WRONG_TENANT,
                        format!(
                            "{kind:?} vector document {doc} carries {:?}; the writes say {other:?}",
                            metadata.get("tenant_id")
                        ),
                    ),
                }
            }
            self.snapshot.insert(kind, rows);
        }
    }

    async fn count_through_node<M: Subject>(&self, t: usize) -> u64 {
        let out = M::Aggregate::default()
            .run(&self.ctx(t), AggregateInput::default())
            .await
            .unwrap_or_else(|e| self.fail("counting through the Aggregate node", &e));
        out.groups[0]["count"].as_u64().expect("a count")
    }

    /// Every live row's graph node carries its tenant, read around the code under test.
    async fn check_graph_tenants(&mut self) {
        for kind in KINDS {
            let live: Vec<(i64, usize)> = self
                .oracle
                .of(kind)
                .iter()
                .filter(|(_, o)| o.state == Live)
                .map(|(id, o)| (*id, o.tenant))
                .collect();
            for (id, tenant) in live {
                match self.fx.graph_node(kind.name(), id).await {
                    Some((props, _)) if props.get("tenant_id") == Some(&json!(TENANTS[tenant])) => {}
                    other => self.violation(
                        WRONG_TENANT,
                        format!("the graph node of {kind:?} {id} of {} is {other:?}", TENANTS[tenant]),
                    ),
                }
            }
        }
    }

    /// The last checkpoint, the summary line, and the verdict.
    async fn finish(mut self, operations: usize, started: Instant) {
        self.step = operations;
        self.checkpoint().await;
        self.check_graph_tenants().await;
        let elapsed = started.elapsed().as_secs_f64();
        let runs: Vec<String> = self.tally.runs.iter().map(|(op, n)| format!("{op:?} {n}")).collect();
        let cross: Vec<String> = self.tally.cross.iter().map(|(op, n)| format!("{op:?} {n}")).collect();
        let attempts: usize = self.tally.cross.values().sum();
        let found: usize = self.violations.values().map(Vec::len).sum();
        eprintln!(
            "tenant_isolation {}: seed {:#x}, {operations} random operations after {} seeded rows, {elapsed:.1} s; \
             runs: {}; cross-tenant attempts {attempts} ({}): refused {}, answered with own rows only {}; \
             shared unique keys {}, id takeovers {}, deletes refused by a restricting relation {}, checkpoints {}, search hits {}, \
             graph neighbours {}; violations {found}",
            self.backend,
            self.seed,
            self.tally.seeded,
            runs.join(", "),
            cross.join(", "),
            self.tally.refused,
            self.tally.contained,
            self.tally.shared_keys,
            self.tally.takeovers,
            self.tally.restricted,
            self.tally.checkpoints,
            self.tally.search_hits,
            self.tally.neighbours,
        );
        let mut report = String::new();
        for (category, items) in &self.violations {
            let _ = writeln!(report, "{category}: {} times, for example", items.len());
            for item in items.iter().take(6) {
                let _ = writeln!(report, "  {item}");
            }
        }
        assert!(
            report.is_empty(),
            "tenant isolation broken on {} (replay with DATAFLOW_TENANT_SEED={:#x}):\n{report}",
            self.backend,
            self.seed
        );
        if operations >= 1_000 {
            // A run that never reached the interesting cases proves nothing.
            for (op, _) in WEIGHTS {
                assert!(
                    self.tally.cross.get(&op).is_some_and(|n| *n > 0),
                    "no cross-tenant attempt through {op:?}"
                );
            }
            assert!(self.tally.shared_keys > 0 && self.tally.search_hits > 0 && self.tally.neighbours > 0);
        }
    }
}

/// An update of the row `id` by `patch`, at whatever version it has.
fn patch_by_id(id: i64, patch: Map<String, Json>) -> UpdateInput {
    UpdateInput::by_id(id, patch)
}

/// A delete of the row `id`.
/// Whether a delete was refused because rows still name a row it would remove.
fn restricted(e: &Error) -> bool {
    matches!(e, Error::InvalidInput { part: "delete", message, .. } if message.contains("restricts deletes"))
}

fn delete_by_id(id: i64, hard: bool) -> DeleteInput {
    DeleteInput {
        id: Some(id),
        filter: None,
        hard,
    }
}

/// A number from the environment, decimal or `0x` hex, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={text}: {e}"))
        }
        Err(_) => default,
    }
}

/// The property: over thousands of random operations of three tenants through every node of
/// every multi-tenant model, no read returns and no write touches another tenant's row.
async fn random_operations_never_cross_tenants(backend: Backend) {
    let multi_tenant: Vec<&str> = dataflow_models::all_models()
        .into_iter()
        .filter(|m| m.multi_tenant)
        .map(|m| m.name)
        .collect();
    assert_eq!(
        multi_tenant,
        KINDS.map(Kind::name),
        "the multi-tenant models changed: teach this test the new ones"
    );
    let seed = env_number("DATAFLOW_TENANT_SEED", DEFAULT_SEED);
    let operations = env_number("DATAFLOW_TENANT_OPERATIONS", DEFAULT_OPERATIONS as u64) as usize;
    let fx = Fixture::with_projections_on(backend, "tenant_isolation").await;
    let started = Instant::now();
    let mut driver = Driver::new(&fx, backend, seed);
    driver.seed_rows().await;
    driver.run(operations).await;
    driver.finish(operations, started).await;
}
on_both_backends!(random_operations_never_cross_tenants);

/// The smallest reproduction of the foreign-key rule: a row of one tenant may not name
/// another tenant's row through Create, Update, BulkUpsert or a graph link.
async fn a_foreign_key_naming_another_tenants_row_is_refused(backend: Backend) {
    let fx = Fixture::on(backend, "tenant_foreign_key").await;
    let acme = fx.tenant("acme");
    let globex = fx.tenant("globex");
    let customer = |email: &str| -> CreateInput<Customer> {
        CreateInput {
            record: serde_json::from_value(
                json!({"name": "Buyer", "email": email, "segment": "retail", "country": "DE", "credit_limit": 10.0}),
            )
            .unwrap(),
        }
    };
    let project = |customer_id: i64| -> Json {
        json!({"customer_id": customer_id, "name": "Fit-out", "description": "A warehouse", "status": "active",
               "budget": null, "category_id": null, "due_at": null})
    };
    let acme_customer = CustomerCreateNode.run(&acme, customer("a@acme.example")).await.unwrap().record.id();
    let globex_customer = CustomerCreateNode
        .run(&globex, customer("g@globex.example"))
        .await
        .unwrap()
        .record
        .id();
    let acme_project = ProjectCreateNode
        .run(
            &acme,
            CreateInput {
                record: serde_json::from_value(project(acme_customer)).unwrap(),
            },
        )
        .await
        .unwrap()
        .record
        .id();
    let globex_project = ProjectCreateNode
        .run(
            &globex,
            CreateInput {
                record: serde_json::from_value(project(globex_customer)).unwrap(),
            },
        )
        .await
        .unwrap()
        .record
        .id();
    let mut accepted: Vec<String> = Vec::new();

    let created = ProjectCreateNode
        .run(
            &globex,
            CreateInput {
                record: serde_json::from_value(project(acme_customer)).unwrap(),
            },
        )
        .await;
    if let Ok(out) = created {
        accepted.push(format!(
            "ProjectCreate for globex stored Project {} with acme's customer",
            out.record.id()
        ));
    }
    let quote = json!({"number": "Q-2026-00001", "customer_id": globex_customer, "project_id": acme_project, "total": 1.0,
                       "currency": "EUR", "status": "draft", "valid_until": "2026-12-31T00:00:00Z", "notes": "Offer"});
    if let Ok(out) = QuoteCreateNode
        .run(
            &globex,
            CreateInput {
                record: serde_json::from_value(quote).unwrap(),
            },
        )
        .await
    {
        accepted.push(format!(
            "QuoteCreate for globex stored Quote {} with acme's project",
            out.record.id()
        ));
    }
    let mut patch = Map::new();
    patch.insert("customer_id".into(), json!(acme_customer));
    let updated = ProjectUpdateNode.run(&globex, patch_by_id(globex_project, patch)).await;
    if let Ok(out) = updated
        && out.updated > 0
    {
        accepted.push(format!("ProjectUpdate of globex's Project {globex_project} set acme's customer"));
    }
    let bulk = ProjectBulkUpsertNode
        .run(
            &globex,
            BulkUpsertInput {
                rows: vec![project(acme_customer)],
                ..Default::default()
            },
        )
        .await
        .expect("bulk upsert");
    if bulk.inserted > 0 {
        accepted.push(format!("ProjectBulkUpsert for globex stored {:?} with acme's customer", bulk.ids));
    }
    // The graph link checks its target within the tenant: the reference behaviour.
    let linked = ProjectGraphNode
        .run(
            &globex,
            GraphInput::Link {
                id: globex_project,
                relation: "FOR_CUSTOMER".into(),
                target_id: acme_customer,
            },
        )
        .await;
    if !matches!(linked, Err(Error::NotFound { .. })) {
        accepted.push(format!("ProjectGraph link of globex's project to acme's customer: {linked:?}"));
    }

    let crossing = fx
        .count("projects", &format!("tenant_id = 'globex' AND customer_id = {acme_customer}"))
        .await
        + fx.count("quotes", &format!("tenant_id = 'globex' AND project_id = {acme_project}"))
            .await;
    assert!(
        accepted.is_empty() && crossing == 0,
        "globex rows name acme's rows ({crossing} stored):\n  {}",
        accepted.join("\n  ")
    );
}
on_both_backends!(a_foreign_key_naming_another_tenants_row_is_refused);
