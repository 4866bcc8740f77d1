//! The served OpenAPI document tells the truth a generated client relies on: every reference
//! resolves, one name means one shape, every error is problem details, and every parameter is
//! where the server reads it. And the docs page is served from the binary alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app};

/// Every `$ref` in `value`, with the JSON path where it was found.
fn refs<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref"
                    && let Some(target) = v.as_str()
                {
                    found.push((at.clone(), target));
                } else {
                    refs(v, format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// Resolves a local JSON pointer (`#/components/schemas/X`) in the document.
fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    document.pointer(pointer)
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation: (path template, method, operation).
fn operations(document: &Value) -> Vec<(&str, &str, &Value)> {
    let mut found = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((template.as_str(), method, operation));
            }
        }
    }
    found
}

/// Everything wrong with a document, one line each.
fn defects(document: &Value) -> Vec<String> {
    let mut defects = Vec::new();

    let mut found = Vec::new();
    refs(document, String::new(), &mut found);
    for (at, target) in found {
        if resolve(document, target).is_none() {
            defects.push(format!("dangling $ref {target} at {at}"));
        }
    }

    for (template, method, operation) in operations(document) {
        let op = format!("{} {template}", method.to_uppercase());
        let placeholders: BTreeSet<&str> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let mut path_params = BTreeSet::new();
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let parameter = match parameter.get("$ref").and_then(Value::as_str) {
                Some(r) => resolve(document, r).unwrap_or(parameter),
                None => parameter,
            };
            let name = parameter["name"].as_str().unwrap_or_default();
            if parameter["in"] == "path" {
                if !placeholders.contains(name) {
                    defects.push(format!("{op}: path parameter `{name}` is not in the path"));
                }
                if parameter["required"] != true {
                    defects.push(format!("{op}: path parameter `{name}` is not required"));
                }
                path_params.insert(name);
            }
        }
        for missing in placeholders.difference(&path_params) {
            defects.push(format!("{op}: `{{{missing}}}` has no path parameter"));
        }

        let responses = operation["responses"].as_object().expect("responses");
        if !responses.contains_key("default") {
            defects.push(format!("{op}: no default (problem) response"));
        }
        for (status, response) in responses {
            if response["description"].as_str().is_none_or(str::is_empty) {
                defects.push(format!("{op} {status}: no description"));
            }
            let is_error =
                status == "default" || status.starts_with('4') || status.starts_with('5');
            // The readiness probe's 503 is its health report, for load balancers.
            if !is_error || (template == "/ready" && status == "503") {
                continue;
            }
            let content = response["content"].as_object();
            let types: Vec<&String> = content.into_iter().flat_map(|c| c.keys()).collect();
            if types != ["application/problem+json"] {
                defects.push(format!("{op} {status}: error content is {types:?}"));
                continue;
            }
            let schema = &response["content"]["application/problem+json"]["schema"];
            if schema["$ref"] != "#/components/schemas/Problem" {
                defects.push(format!("{op} {status}: error schema is {schema}"));
            }
        }
    }
    defects
}

#[actix_web::test]
async fn the_served_document_resolves_every_reference_and_documents_errors_as_problems() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();

    let defects = defects(&document);
    assert!(defects.is_empty(), "{}", defects.join("\n"));
    assert!(
        operations(&document).len() > 70,
        "the document lists the operations"
    );
}

#[actix_web::test]
async fn query_parameters_are_documented_in_the_query() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    for (template, expected) in [
        (
            "/api/v1/admin/users",
            ["role", "status", "email", "limit", "cursor"].as_slice(),
        ),
        (
            "/api/v1/admin/couriers/{id}/trail",
            ["day", "after", "limit"].as_slice(),
        ),
    ] {
        let parameters = document["paths"][template]["get"]["parameters"]
            .as_array()
            .unwrap();
        for name in expected {
            let parameter = parameters
                .iter()
                .find(|p| p["name"] == *name)
                .unwrap_or_else(|| panic!("{template} documents `{name}`"));
            assert_eq!(parameter["in"], "query", "{template} `{name}`");
        }
    }
}

#[test]
fn the_checker_finds_each_kind_of_defect() {
    let document = serde_json::json!({
        "paths": {
            "/things/{id}": {"get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": true},
                    {"name": "limit", "in": "path", "required": true},
                ],
                "responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "404": {"description": "Not Found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
                },
            }},
            "/others/{id}": {"get": {"responses": {
                "default": {"description": "other errors", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
            }}},
        },
        "components": {"schemas": {"Problem": {"type": "object"}}},
    });
    let defects = defects(&document);
    let expect = [
        "dangling $ref #/components/schemas/Thing",
        "GET /things/{id}: path parameter `limit` is not in the path",
        "GET /things/{id}: no default (problem) response",
        "GET /things/{id} 200: no description",
        "GET /things/{id} 404: error content is [\"application/json\"]",
        "GET /others/{id}: `{id}` has no path parameter",
    ];
    for e in expect {
        assert!(
            defects.iter().any(|d| d.starts_with(e)),
            "{e} in {defects:#?}"
        );
    }
    assert_eq!(defects.len(), expect.len(), "{defects:#?}");
}

/// Schema names of every type that derives `ToSchema` in the crate's sources, with where each
/// is declared. The document keeps one schema per name, so two types under one name would
/// silently describe one of them with the other's shape.
fn schema_names() -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let line = line.trim_start();
                if !(line.starts_with("#[derive(") && line.contains("ToSchema")) {
                    continue;
                }
                let mut alias = None;
                for (j, next) in lines.iter().enumerate().skip(i + 1).take(40) {
                    let next = next.trim_start();
                    if let Some(rest) = next.strip_prefix("#[schema(")
                        && let Some(at) = rest.find("as = ")
                    {
                        let name: String = rest[at + 5..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                            .collect();
                        alias = name.rsplit("::").next().map(str::to_owned);
                    }
                    let item = next
                        .strip_prefix("pub ")
                        .or_else(|| next.strip_prefix("pub(crate) "))
                        .unwrap_or(next);
                    if let Some(rest) = item
                        .strip_prefix("struct ")
                        .or_else(|| item.strip_prefix("enum "))
                    {
                        let ident: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        names
                            .entry(alias.take().unwrap_or(ident))
                            .or_default()
                            .push(format!("{}:{}", path.display(), j + 1));
                        break;
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_schema_name_belongs_to_one_type() {
    let names = schema_names();
    assert!(names.contains_key("Problem") && names.contains_key("OrderDeliveryAddress"));
    let clashes: Vec<String> = names
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(name, at)| format!("{name}: {}", at.join(", ")))
        .collect();
    assert!(
        clashes.is_empty(),
        "schema names used twice:\n{}",
        clashes.join("\n")
    );
}

#[actix_web::test]
async fn checkout_takes_the_delivery_address_the_document_describes() {
    let app = spawn_app().await;
    let document: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    let request = &document["paths"]["/api/v1/checkout"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"];
    let request = resolve(&document, request.as_str().unwrap()).unwrap();
    let address = &request["properties"]["delivery_address"];
    let address = address
        .get("$ref")
        .or_else(|| address["oneOf"][0].get("$ref"))
        .and_then(Value::as_str)
        .map_or(address, |r| resolve(&document, r).unwrap());
    let fields: BTreeSet<&str> = address["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(["text", "lat", "lng"]), "{address}");
}

#[actix_web::test]
async fn the_docs_page_and_its_files_come_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    let foreign: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.contains("://"))
        .collect();
    assert!(
        foreign.is_empty(),
        "the docs page refers to other hosts: {foreign:?}"
    );

    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status(), 200);
    let initializer = initializer.text().await.unwrap();
    assert!(
        initializer.contains("/api/v1/openapi.json"),
        "{initializer}"
    );
    assert!(
        initializer.contains("\"validatorUrl\": \"none\""),
        "{initializer}"
    );

    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(
        bundle.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );

    // `/docs` itself leads to the page.
    let bare = app.get("/docs").await;
    assert_eq!(bare.status(), 200);

    assert_problem(app.get("/docs/no-such-file.js").await, 404, "not_found").await;
}
