//! Catches drift between the project's `.proto` files and the AxonServer wire
//! contract in `shared/axon/wire-facts.json` (and the paths and reserved
//! numbers in `shared/axon/WIRE.md`).
//!
//! Every mismatch is collected first and reported together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde_json::Value;

const FACTS_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/axon/wire-facts.json"
);
const WIRE_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/axon/WIRE.md");
const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// The files this crate declares, with their packages.
const CORE: [(&str, &str); 5] = [
    ("common.proto", "io.axoniq.axonserver.grpc"),
    ("control.proto", "io.axoniq.axonserver.grpc.control"),
    ("command.proto", "io.axoniq.axonserver.grpc.command"),
    ("query.proto", "io.axoniq.axonserver.grpc.query"),
    ("event.proto", "io.axoniq.axonserver.grpc.event"),
];

/// Files of the contract this crate does not declare (yet); their facts are skipped.
const NOT_DECLARED: [(&str, &str); 4] = [
    ("dcb.proto", "io.axoniq.axonserver.grpc.event.dcb"),
    (
        "persistent-streams.proto",
        "io.axoniq.axonserver.grpc.streams",
    ),
    ("admin.proto", "io.axoniq.axonserver.grpc.admin"),
    ("license.proto", "io.axoniq.axonserver.grpc.license"),
];

/// Field numbers reserved upstream (the per-file tables of WIRE.md).
const RESERVED_UPSTREAM: &[(&str, &[i32])] = &[
    (".io.axoniq.axonserver.grpc.FlowControl", &[1]),
    (".io.axoniq.axonserver.grpc.query.QueryResponse", &[15]),
    (".io.axoniq.axonserver.grpc.query.QuerySubscription", &[6]),
];

/// Never-used gaps that WIRE.md §5 recommends reserving explicitly.
const RESERVED_GAPS: &[(&str, &[i32])] = &[
    (
        ".io.axoniq.axonserver.grpc.control.PlatformOutboundInstruction",
        &[2],
    ),
    (".io.axoniq.axonserver.grpc.query.QueryUpdate", &[1]),
    (".io.axoniq.axonserver.grpc.query.QueryUpdateComplete", &[1]),
    (
        ".io.axoniq.axonserver.grpc.query.QueryUpdateCompleteExceptionally",
        &[1, 4],
    ),
    (
        ".io.axoniq.axonserver.grpc.event.ReadHighestSequenceNrRequest",
        &[2],
    ),
];

/// Enum numbers reserved upstream.
const RESERVED_ENUM_VALUES: &[(&str, &[i32])] =
    &[(".io.axoniq.axonserver.grpc.ProcessingKey", &[4, 5, 6])];

// ---------------------------------------------------------------------------
// The contract as a comparable model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    number: i64,
    ty: String,
    label: String,
    type_name: String,
    oneof: String,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} {}", self.number, self.ty, self.label)?;
        if !self.type_name.is_empty() {
            write!(f, " {}", self.type_name)?;
        }
        if !self.oneof.is_empty() {
            write!(f, " oneof {}", self.oneof)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rpc {
    input: String,
    output: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stream = |on: bool| if on { "stream " } else { "" };
        write!(
            f,
            "({}{}) returns ({}{})",
            stream(self.client_streaming),
            self.input,
            stream(self.server_streaming),
            self.output
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Number(i64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "= {}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Package(String);

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package {}", self.0)
    }
}

/// `kind name -> member -> value`, e.g. message `.pkg.Msg` -> field -> [`Field`].
type Table<V> = BTreeMap<String, BTreeMap<String, V>>;

#[derive(Debug, Default)]
struct Model {
    /// file name -> package
    packages: BTreeMap<String, Package>,
    messages: Table<Field>,
    enums: Table<Number>,
    services: Table<Rpc>,
}

fn compile() -> FileDescriptorSet {
    let mut files: Vec<String> = std::fs::read_dir(PROTO_DIR)
        .unwrap_or_else(|e| panic!("reading {PROTO_DIR}: {e}"))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|name| name.ends_with(".proto"))
        .collect();
    files.sort();
    let mut core: Vec<String> = CORE.iter().map(|(file, _)| (*file).to_owned()).collect();
    core.sort();
    assert_eq!(
        files, core,
        "proto/ should hold exactly the five core files (and build.rs compile them)"
    );
    protox::compile(&files, [PROTO_DIR]).unwrap_or_else(|e| panic!("protox: {e:?}"))
}

fn core_files(fds: &FileDescriptorSet) -> impl Iterator<Item = &FileDescriptorProto> {
    fds.file
        .iter()
        .filter(|file| CORE.iter().any(|(name, _)| *name == file.name()))
}

fn add_message(model: &mut Model, scope: &str, message: &DescriptorProto) {
    let full = format!("{scope}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|field| {
            let oneof = field
                .oneof_index
                .and_then(|i| usize::try_from(i).ok())
                .map(|i| message.oneof_decl[i].name().to_owned())
                .unwrap_or_default();
            let value = Field {
                number: i64::from(field.number()),
                ty: field.r#type().as_str_name().to_owned(),
                label: field.label().as_str_name().to_owned(),
                type_name: field.type_name().to_owned(),
                oneof,
            };
            (field.name().to_owned(), value)
        })
        .collect();
    model.messages.insert(full.clone(), fields);
    for nested in &message.nested_type {
        add_message(model, &full, nested);
    }
    for nested in &message.enum_type {
        add_enum(model, &full, nested);
    }
}

fn add_enum(model: &mut Model, scope: &str, enumeration: &EnumDescriptorProto) {
    let values = enumeration
        .value
        .iter()
        .map(|v| (v.name().to_owned(), Number(i64::from(v.number()))))
        .collect();
    model
        .enums
        .insert(format!("{scope}.{}", enumeration.name()), values);
}

fn model_from_descriptors(fds: &FileDescriptorSet) -> Model {
    let mut model = Model::default();
    for file in core_files(fds) {
        let scope = format!(".{}", file.package());
        model
            .packages
            .insert(file.name().to_owned(), Package(file.package().to_owned()));
        for message in &file.message_type {
            add_message(&mut model, &scope, message);
        }
        for enumeration in &file.enum_type {
            add_enum(&mut model, &scope, enumeration);
        }
        for service in &file.service {
            let rpcs = service
                .method
                .iter()
                .map(|m| {
                    let rpc = Rpc {
                        input: m.input_type().to_owned(),
                        output: m.output_type().to_owned(),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    };
                    (m.name().to_owned(), rpc)
                })
                .collect();
            model
                .services
                .insert(format!("{scope}.{}", service.name()), rpcs);
        }
    }
    model
}

/// `[number, type, label, type_name, oneof]`
fn parse_field(fact: &Value) -> Option<Field> {
    let [number, ty, label, type_name, oneof] = fact.as_array()?.as_slice() else {
        return None;
    };
    Some(Field {
        number: number.as_i64()?,
        ty: ty.as_str()?.to_owned(),
        label: label.as_str()?.to_owned(),
        type_name: type_name.as_str()?.to_owned(),
        oneof: oneof.as_str()?.to_owned(),
    })
}

/// `[input, output, client_streaming, server_streaming]`
fn parse_rpc(fact: &Value) -> Option<Rpc> {
    let [input, output, cs, ss] = fact.as_array()?.as_slice() else {
        return None;
    };
    Some(Rpc {
        input: input.as_str()?.to_owned(),
        output: output.as_str()?.to_owned(),
        client_streaming: cs.as_bool()?,
        server_streaming: ss.as_bool()?,
    })
}

/// Reads wire-facts.json; shape problems are reported as mismatches.
fn model_from_json(json: &Value, problems: &mut Vec<String>) -> Model {
    let mut model = Model::default();
    let Some(top) = json.as_object() else {
        problems.push("wire-facts.json: top level is not an object".to_owned());
        return model;
    };
    for key in top.keys() {
        if !["packages", "messages", "enums", "services"].contains(&key.as_str()) {
            problems.push(format!(
                "wire-facts.json: top-level key `{key}` is not checked by this test; teach it"
            ));
        }
    }
    let section = |name: &str, problems: &mut Vec<String>| -> serde_json::Map<String, Value> {
        match top.get(name).and_then(Value::as_object) {
            Some(map) => map.clone(),
            None => {
                problems.push(format!(
                    "wire-facts.json: `{name}` missing or not an object"
                ));
                serde_json::Map::new()
            }
        }
    };

    for (file, package) in section("packages", problems) {
        match package.as_str() {
            Some(p) => {
                model.packages.insert(file, Package(p.to_owned()));
            }
            None => problems.push(format!("wire-facts.json: packages.{file} is not a string")),
        }
    }

    for (message, fields) in section("messages", problems) {
        let mut out = BTreeMap::new();
        let Some(fields) = fields.as_object() else {
            problems.push(format!(
                "wire-facts.json: messages.{message} is not an object"
            ));
            continue;
        };
        for (name, fact) in fields {
            match parse_field(fact) {
                Some(field) => {
                    out.insert(name.clone(), field);
                }
                None => problems.push(format!(
                    "wire-facts.json: messages.{message}.{name} is not [number, type, label, type_name, oneof]: {fact}"
                )),
            }
        }
        model.messages.insert(message, out);
    }

    for (enumeration, values) in section("enums", problems) {
        let mut out = BTreeMap::new();
        let Some(values) = values.as_object() else {
            problems.push(format!(
                "wire-facts.json: enums.{enumeration} is not an object"
            ));
            continue;
        };
        for (name, number) in values {
            match number.as_i64() {
                Some(n) => {
                    out.insert(name.clone(), Number(n));
                }
                None => problems.push(format!(
                    "wire-facts.json: enums.{enumeration}.{name} is not a number"
                )),
            }
        }
        model.enums.insert(enumeration, out);
    }

    for (service, rpcs) in section("services", problems) {
        let mut out = BTreeMap::new();
        let Some(rpcs) = rpcs.as_object() else {
            problems.push(format!(
                "wire-facts.json: services.{service} is not an object"
            ));
            continue;
        };
        for (name, fact) in rpcs {
            match parse_rpc(fact) {
                Some(rpc) => {
                    out.insert(name.clone(), rpc);
                }
                None => problems.push(format!(
                    "wire-facts.json: services.{service}.{name} is not [input, output, client_streaming, server_streaming]: {fact}"
                )),
            }
        }
        model.services.insert(service, out);
    }
    model
}

// ---------------------------------------------------------------------------
// Scope: which facts concern the five core files
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Core,
    NotDeclared(&'static str),
    Unknown,
}

/// Scope of a fully-qualified name (`.pkg.Type`), by its longest known package.
fn scope_of_name(full: &str) -> Scope {
    let known = CORE
        .iter()
        .map(|(_, p)| (*p, true))
        .chain(NOT_DECLARED.iter().map(|(_, p)| (*p, false)));
    known
        .filter(|(package, _)| {
            full.strip_prefix('.')
                .and_then(|rest| rest.strip_prefix(package))
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(package, _)| package.len())
        .map_or(Scope::Unknown, |(package, core)| {
            if core {
                Scope::Core
            } else {
                Scope::NotDeclared(package)
            }
        })
}

fn scope_of_file(file: &str) -> Scope {
    if CORE.iter().any(|(f, _)| *f == file) {
        Scope::Core
    } else if let Some((_, package)) = NOT_DECLARED.iter().find(|(f, _)| *f == file) {
        Scope::NotDeclared(package)
    } else {
        Scope::Unknown
    }
}

#[derive(Debug, Default)]
struct Report {
    checked: usize,
    skipped: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
}

impl Report {
    /// Compares one member (field, enum value, rpc) of `owner`.
    fn member<V: PartialEq + fmt::Display>(
        &mut self,
        owner: &str,
        member: &str,
        expected: Option<&V>,
        actual: Option<&V>,
    ) {
        match (expected, actual) {
            (Some(e), Some(a)) if e == a => self.checked += 1,
            (Some(e), Some(a)) => {
                self.checked += 1;
                self.mismatches
                    .push(format!("{owner} `{member}`: expected {e}, found {a}"));
            }
            (Some(e), None) => {
                self.checked += 1;
                self.mismatches
                    .push(format!("{owner} `{member}`: expected {e}, missing"));
            }
            (None, Some(a)) => self.mismatches.push(format!(
                "{owner} `{member}`: declared as {a}, not in the fact table"
            )),
            (None, None) => {}
        }
    }

    /// Compares one section (messages, enums or services) of the two models.
    fn table<V: PartialEq + fmt::Display>(
        &mut self,
        kind: &str,
        expected: &Table<V>,
        actual: &Table<V>,
    ) {
        let names: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
        for name in names {
            let in_facts = expected.get(name);
            if let Some(members) = in_facts {
                match scope_of_name(name) {
                    Scope::Core => {}
                    Scope::NotDeclared(package) => {
                        *self.skipped.entry(package).or_default() += 1 + members.len();
                        continue;
                    }
                    Scope::Unknown => {
                        self.mismatches.push(format!(
                            "{kind} {name}: in the fact table, but its package is neither a core one nor a known undeclared one"
                        ));
                        continue;
                    }
                }
            }
            let owner = format!("{kind} {name}");
            match (in_facts, actual.get(name)) {
                (Some(e), Some(a)) => {
                    self.checked += 1;
                    let members: BTreeSet<&String> = e.keys().chain(a.keys()).collect();
                    for member in members {
                        self.member(&owner, member, e.get(member), a.get(member));
                    }
                }
                (Some(e), None) => {
                    self.checked += 1 + e.len();
                    self.mismatches.push(format!(
                        "{owner}: missing from the .proto files ({} members expected)",
                        e.len()
                    ));
                }
                (None, Some(_)) => self
                    .mismatches
                    .push(format!("{owner}: declared, but not in the fact table")),
                (None, None) => {}
            }
        }
    }
}

fn load_facts() -> Value {
    let text = std::fs::read_to_string(FACTS_JSON).unwrap_or_else(|e| {
        panic!("cannot read {FACTS_JSON} (shared/ must sit next to the repository): {e}")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{FACTS_JSON}: {e}"))
}

fn assert_no_mismatches(what: &str, mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{what}: {} mismatch(es):\n  - {}",
        mismatches.len(),
        mismatches.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Compares every fact of `json` against `ours`.
fn check(json: &Value, ours: &Model) -> Report {
    let mut problems = Vec::new();
    let facts = model_from_json(json, &mut problems);

    let mut report = Report {
        mismatches: problems,
        ..Report::default()
    };

    // packages: file -> package
    let files: BTreeSet<&String> = facts.packages.keys().chain(ours.packages.keys()).collect();
    for file in files {
        match scope_of_file(file) {
            Scope::Core => report.member(
                "file",
                file,
                facts.packages.get(file),
                ours.packages.get(file),
            ),
            Scope::NotDeclared(package) => *report.skipped.entry(package).or_default() += 1,
            Scope::Unknown => report.mismatches.push(format!(
                "file {file}: in the fact table, but not a known file"
            )),
        }
    }
    report.table("message", &facts.messages, &ours.messages);
    report.table("enum", &facts.enums, &ours.enums);
    report.table("service", &facts.services, &ours.services);

    // No core package may be without facts: that would make this test vacuous.
    for (file, package) in CORE {
        let prefix = format!(".{package}.");
        let has_facts = facts.messages.keys().any(|n| n.starts_with(&prefix))
            && facts.packages.contains_key(file);
        if !has_facts {
            report.mismatches.push(format!(
                "the fact table has no messages or no package entry for {file} ({package})"
            ));
        }
    }

    report
}

#[test]
fn proto_files_match_every_core_fact_in_wire_facts_json() {
    let ours = model_from_descriptors(&compile());
    let report = check(&load_facts(), &ours);
    println!(
        "wire facts: {} checked, {} skipped (undeclared packages: {:?})",
        report.checked,
        report.skipped.values().sum::<usize>(),
        report.skipped
    );
    assert_no_mismatches("wire-facts.json vs proto/*.proto", &report.mismatches);
}

#[test]
fn every_field_number_gap_is_reserved_as_wire_md_says() {
    let fds = compile();
    let mut mismatches = Vec::new();
    let mut expected: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    for (message, numbers) in RESERVED_UPSTREAM.iter().chain(RESERVED_GAPS) {
        expected
            .entry(message)
            .or_default()
            .extend(numbers.iter().copied());
    }

    fn walk(
        scope: &str,
        message: &DescriptorProto,
        expected: &BTreeMap<&str, BTreeSet<i32>>,
        seen: &mut BTreeSet<String>,
        mismatches: &mut Vec<String>,
    ) {
        let full = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            walk(&full, nested, expected, seen, mismatches);
        }
        if message.options.as_ref().is_some_and(|o| o.map_entry()) {
            return;
        }
        seen.insert(full.clone());
        // Message reserved ranges are end-exclusive.
        let reserved: BTreeSet<i32> = message
            .reserved_range
            .iter()
            .flat_map(|r| r.start()..r.end())
            .collect();
        let want = expected.get(full.as_str()).cloned().unwrap_or_default();
        if reserved != want {
            mismatches.push(format!(
                "message {full}: reserved {reserved:?}, expected {want:?}"
            ));
        }
        let used: BTreeSet<i32> = message.field.iter().map(|f| f.number()).collect();
        if let Some(&max) = used.last() {
            let gaps: Vec<i32> = (1..max)
                .filter(|n| !used.contains(n) && !reserved.contains(n))
                .collect();
            if !gaps.is_empty() {
                mismatches.push(format!(
                    "message {full}: field numbers {gaps:?} are neither used nor reserved"
                ));
            }
        }
    }

    let mut seen = BTreeSet::new();
    let mut enum_reserved: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for file in core_files(&fds) {
        let scope = format!(".{}", file.package());
        for message in &file.message_type {
            walk(&scope, message, &expected, &mut seen, &mut mismatches);
        }
        for enumeration in &file.enum_type {
            // Enum reserved ranges are end-inclusive.
            let reserved: BTreeSet<i32> = enumeration
                .reserved_range
                .iter()
                .flat_map(|r| r.start()..=r.end())
                .collect();
            enum_reserved.insert(format!("{scope}.{}", enumeration.name()), reserved);
        }
    }
    for message in expected.keys() {
        if !seen.contains(*message) {
            mismatches.push(format!("message {message}: not declared"));
        }
    }
    for (enumeration, reserved) in &enum_reserved {
        let want: BTreeSet<i32> = RESERVED_ENUM_VALUES
            .iter()
            .find(|(name, _)| name == enumeration)
            .map(|(_, numbers)| numbers.iter().copied().collect())
            .unwrap_or_default();
        if *reserved != want {
            mismatches.push(format!(
                "enum {enumeration}: reserved {reserved:?}, expected {want:?}"
            ));
        }
    }
    assert_no_mismatches("reserved numbers", &mismatches);
}

#[test]
fn rpc_paths_match_wire_md_and_generated_code() {
    let fds = compile();
    let mut ours = BTreeSet::new();
    let mut services = BTreeSet::new();
    for file in core_files(&fds) {
        for service in &file.service {
            services.insert(format!("{}.{}", file.package(), service.name()));
            for method in &service.method {
                ours.insert(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert!(ours.contains("/io.axoniq.axonserver.grpc.command.CommandService/Dispatch"));

    // Paths as WIRE.md lists them (`/package.Service/Method`), core packages only.
    let text =
        std::fs::read_to_string(WIRE_MD).unwrap_or_else(|e| panic!("cannot read {WIRE_MD}: {e}"));
    let documented: BTreeSet<String> = text
        .split('`')
        .filter(|s| s.starts_with("/io.axoniq.axonserver.grpc."))
        .filter(|path| {
            let service = path[1..].split('/').next().unwrap_or_default();
            scope_of_name(&format!(".{service}")) == Scope::Core
        })
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = documented.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&documented).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "gRPC paths differ from WIRE.md: missing {missing:?}, not documented {extra:?}"
    );

    // The generated servers announce the same service names.
    use telamon_axon_proto::pb;
    let generated: BTreeSet<String> = [
        pb::control::platform_service_server::SERVICE_NAME,
        pb::command::command_service_server::SERVICE_NAME,
        pb::query::query_service_server::SERVICE_NAME,
        pb::event::event_store_server::SERVICE_NAME,
        pb::event::event_scheduler_server::SERVICE_NAME,
        pb::event::event_transformation_service_server::SERVICE_NAME,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(generated, services);
}

#[test]
fn command_round_trips_through_prost() {
    use telamon_axon_proto::pb::command::Command;
    use telamon_axon_proto::pb::meta_data_value::Data;
    use telamon_axon_proto::pb::{
        MetaDataValue, ProcessingInstruction, ProcessingKey, SerializedObject,
    };

    let command = Command {
        message_identifier: "c0ffee00-0000-4000-8000-000000000001".into(),
        name: "RegisterUser".into(),
        timestamp: 1_767_225_600_000,
        payload: Some(SerializedObject {
            r#type: "RegisterUser".into(),
            revision: "1".into(),
            data: br#"{"user":"ada"}"#.to_vec(),
        }),
        meta_data: [
            (
                "traceId".to_owned(),
                MetaDataValue {
                    data: Some(Data::TextValue("t-1".into())),
                },
            ),
            (
                "attempt".to_owned(),
                MetaDataValue {
                    data: Some(Data::NumberValue(-3)),
                },
            ),
        ]
        .into_iter()
        .collect(),
        processing_instructions: vec![ProcessingInstruction {
            key: ProcessingKey::RoutingKey as i32,
            value: Some(MetaDataValue {
                data: Some(Data::TextValue("user-ada".into())),
            }),
        }],
        client_id: "client-1".into(),
        component_name: "telamon".into(),
    };

    let bytes = command.encode_to_vec();
    let decoded = Command::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded, command);

    // number_value is a zig-zag sint64: -1 travels as varint 1 under tag (2 << 3) | 0.
    let minus_one = MetaDataValue {
        data: Some(Data::NumberValue(-1)),
    };
    assert_eq!(minus_one.encode_to_vec(), [0x10, 0x01]);
}

#[test]
fn scope_of_name_prefers_the_longest_package() {
    assert_eq!(
        scope_of_name(".io.axoniq.axonserver.grpc.event.dcb.Event"),
        Scope::NotDeclared("io.axoniq.axonserver.grpc.event.dcb")
    );
    assert_eq!(
        scope_of_name(".io.axoniq.axonserver.grpc.event.Event"),
        Scope::Core
    );
    assert_eq!(
        scope_of_name(".io.axoniq.axonserver.grpc.FlowControl"),
        Scope::Core
    );
    assert_eq!(scope_of_name(".google.protobuf.Empty"), Scope::Unknown);
    assert!(Path::new(PROTO_DIR).is_dir());
}

#[test]
fn only_undeclared_packages_are_skipped() {
    let ours = model_from_descriptors(&compile());
    let mut json = load_facts();
    let extra = serde_json::json!({
        "packages": {
            "dcb.proto": "io.axoniq.axonserver.grpc.event.dcb",
            "mystery.proto": "io.axoniq.axonserver.grpc.mystery"
        },
        "messages": {
            ".io.axoniq.axonserver.grpc.event.dcb.Tag": {
                "key": [1, "TYPE_BYTES", "LABEL_OPTIONAL", "", ""]
            },
            ".io.axoniq.axonserver.grpc.mystery.Thing": {},
            ".io.axoniq.axonserver.grpc.event.NotDeclaredHere": {}
        },
        "services": {
            ".io.axoniq.axonserver.grpc.admin.UserAdminService": {
                "GetUsers": [".google.protobuf.Empty", ".io.axoniq.axonserver.grpc.admin.UserOverview", false, true]
            }
        }
    });
    for (section, entries) in extra.as_object().expect("object") {
        let target = json[section.as_str()].as_object_mut().expect("section");
        for (name, value) in entries.as_object().expect("object") {
            target.insert(name.clone(), value.clone());
        }
    }

    let report = check(&json, &ours);
    let skipped: Vec<(&str, usize)> = report.skipped.iter().map(|(p, n)| (*p, *n)).collect();
    assert_eq!(
        skipped,
        [
            ("io.axoniq.axonserver.grpc.admin", 2),
            ("io.axoniq.axonserver.grpc.event.dcb", 3),
        ]
    );
    let mut mismatches = report.mismatches;
    mismatches.sort();
    assert_eq!(mismatches.len(), 3, "{mismatches:#?}");
    assert!(mismatches[0].starts_with("file mystery.proto:"));
    assert!(
        mismatches[1]
            .starts_with("message .io.axoniq.axonserver.grpc.event.NotDeclaredHere: missing")
    );
    assert!(mismatches[2].starts_with("message .io.axoniq.axonserver.grpc.mystery.Thing:"));
}
