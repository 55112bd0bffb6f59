//! Files from a folder, for `GET` and `HEAD` under the configured path.
//!
//! A path under the static path that names a file gets the file; one that
//! names none goes on to the bus, so `/` can serve a page while `/api/…`
//! reaches handlers. A segment `..`, `.`, one starting with `.` (hidden
//! files) or holding `\` is answered 404 at once and never touches the disk
//! outside the folder. A folder's own path serves its `index`. Files are
//! read whole into memory; the content type follows the extension.

use std::path::{Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::StaticConfig;

#[derive(Debug)]
pub(crate) struct StaticFiles {
    folder: PathBuf,
    /// The URL path without its trailing `/` (`""` for the root).
    base: String,
    index: String,
}

/// What a static lookup found.
#[derive(Debug)]
pub(crate) enum Found {
    /// The file, or a 404 for a path that tried to leave the folder.
    Answer(Response),
    /// No file there: the request goes on to the bus.
    Nothing,
}

impl StaticFiles {
    pub(crate) fn new(config: &StaticConfig) -> Self {
        StaticFiles {
            folder: config.folder.clone(),
            base: config.path.trim_end_matches('/').to_owned(),
            index: config.index.clone(),
        }
    }

    pub(crate) async fn lookup(&self, path: &str, head: bool) -> Found {
        let Some(rest) = path.strip_prefix(&self.base) else {
            return Found::Nothing;
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Found::Nothing;
        }
        let mut file = self.folder.clone();
        for raw in rest.split('/').filter(|s| !s.is_empty()) {
            let Ok(word) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
                return Found::Nothing;
            };
            if word.starts_with('.') || word.contains(['\\', '\0', '/']) {
                return Found::Answer(StatusCode::NOT_FOUND.into_response());
            }
            file.push(&*word);
        }
        let mut meta = tokio::fs::metadata(&file).await;
        if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            file.push(&self.index);
            if head {
                meta = tokio::fs::metadata(&file).await;
            }
        }
        // HEAD needs the length only, not the content.
        let found = if head {
            match meta {
                Ok(m) if m.is_file() => Ok(Content::Length(m.len())),
                Ok(_) => Err(std::io::ErrorKind::NotFound.into()),
                Err(e) => Err(e),
            }
        } else {
            tokio::fs::read(&file).await.map(Content::Bytes)
        };
        match found {
            Ok(content) => {
                let mut r = match content {
                    Content::Bytes(bytes) => bytes.into_response(),
                    Content::Length(len) => {
                        let mut r = StatusCode::OK.into_response();
                        r.headers_mut()
                            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                        r
                    }
                };
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&file)),
                );
                Found::Answer(r)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::NotADirectory
                        | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Found::Nothing
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read a static file");
                Found::Answer(StatusCode::FORBIDDEN.into_response())
            }
        }
    }
}

/// A file's content, or (for HEAD) only its length.
enum Content {
    Bytes(Vec<u8>),
    Length(u64),
}

fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
