//! Notes kept in memory, behind the REST servers.
//!
//! | request | topic | answer |
//! |---|---|---|
//! | `POST /notes` `{"text": …}` (public) | `api.post.notes` | 201 and the note; publishes `notes.created` |
//! | `GET /notes` (public) | `api.get.notes` | every note |
//! | `GET /notes/{id}` (public) | `api.get.notes.*` | the note, or 404 |
//! | `DELETE /notes/{id}` (public) | `api.delete.notes.*` | 204, or 404; publishes `notes.deleted` |
//! | `GET /stats` (admin) | `admin.get.stats` | how many notes, and how many were ever made |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};
use telamon_module_rest_server::{Body, RestRequest, RestResponse, http_error};
use telamon_sdk::{Context, HandlerError, ModuleError, module};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Notes {
    /// Longest note text, in characters.
    max_length: usize,
    #[serde(skip)]
    store: Mutex<Store>,
}

impl Default for Notes {
    fn default() -> Self {
        Notes {
            max_length: 280,
            store: Mutex::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    notes: BTreeMap<u64, Value>,
    made: u64,
}

fn rest_request(message: &Value) -> Result<RestRequest, HandlerError> {
    RestRequest::deserialize(message).map_err(|e| http_error(400, e.to_string()))
}

fn note_id(request: &RestRequest) -> Result<u64, HandlerError> {
    let word = request.path_elements.last().map_or("", String::as_str);
    word.parse()
        .map_err(|_| http_error(404, format!("no note `{word}`")))
}

#[module(name = "notes", message = Value, description = "keeps notes behind the REST servers")]
impl Notes {
    async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
        let (me, events) = (self.clone(), ctx.clone());
        ctx.handle("api.post.notes", move |r| {
            let (me, events) = (me.clone(), events.clone());
            async move {
                let request = rest_request(r.message())?;
                let text = match &request.body {
                    Body::Json(v) => v.get("text").and_then(Value::as_str).unwrap_or(""),
                    _ => "",
                };
                if text.is_empty() || text.chars().count() > me.max_length {
                    return Err(http_error(
                        422,
                        format!(
                            "send {{\"text\": …}} with 1 to {} characters",
                            me.max_length
                        ),
                    ));
                }
                let author = request.header("x-author").unwrap_or("anonymous");
                let note = {
                    let mut store = me.store.lock().unwrap();
                    store.made += 1;
                    let id = store.made;
                    let note = json!({"id": id, "text": text, "author": author});
                    store.notes.insert(id, note.clone());
                    note
                };
                events.publish("notes.created", note.clone()).await?;
                let location = format!("/notes/{}", note["id"]);
                Ok(Value::from(
                    RestResponse::json(201, note).with_header("location", location),
                ))
            }
        })
        .await?;
        let me = self.clone();
        ctx.handle("api.get.notes", move |_| {
            let notes: Vec<Value> = me.store.lock().unwrap().notes.values().cloned().collect();
            async move { Ok::<_, HandlerError>(Value::from(RestResponse::json(200, notes.into()))) }
        })
        .await?;
        let me = self.clone();
        ctx.handle("api.get.notes.*", move |r| {
            let found = rest_request(r.message()).and_then(|req| {
                let id = note_id(&req)?;
                me.store
                    .lock()
                    .unwrap()
                    .notes
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| http_error(404, format!("no note {id}")))
            });
            async move { Ok::<_, HandlerError>(Value::from(RestResponse::json(200, found?))) }
        })
        .await?;
        let (me, events) = (self.clone(), ctx.clone());
        ctx.handle("api.delete.notes.*", move |r| {
            let (me, events) = (me.clone(), events.clone());
            async move {
                let id = note_id(&rest_request(r.message())?)?;
                let removed = me.store.lock().unwrap().notes.remove(&id);
                if removed.is_none() {
                    return Err(http_error(404, format!("no note {id}")));
                }
                events.publish("notes.deleted", json!({"id": id})).await?;
                Ok(Value::from(RestResponse::empty(204)))
            }
        })
        .await?;
        let me = self.clone();
        ctx.handle("admin.get.stats", move |_| {
            let stats = {
                let store = me.store.lock().unwrap();
                json!({"notes": store.notes.len(), "made": store.made})
            };
            async move { Ok::<_, HandlerError>(Value::from(RestResponse::json(200, stats))) }
        })
        .await?;
        Ok(())
    }
}
