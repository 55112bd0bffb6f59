//! Metadata/tag scoring of handlers (SEMANTICS §6.2 step 2): a message's
//! metadata is compared with the tags a client sent in `register`; among
//! several candidates only the best-scoring ones are kept.

use std::collections::HashMap;

use telamon_axon_proto::pb::{MetaDataValue, meta_data_value};

/// +1 for every client tag whose key is in the metadata with an equal value, −1 when it differs.
pub(crate) fn score(
    tags: &HashMap<String, String>,
    meta_data: &HashMap<String, MetaDataValue>,
) -> i64 {
    tags.iter()
        .filter_map(|(key, value)| {
            let data = meta_data.get(key)?.data.as_ref()?;
            let text = match data {
                meta_data_value::Data::TextValue(text) => text.clone(),
                meta_data_value::Data::NumberValue(n) => n.to_string(),
                meta_data_value::Data::BooleanValue(b) => b.to_string(),
                meta_data_value::Data::DoubleValue(d) => d.to_string(),
                meta_data_value::Data::BytesValue(_) => return Some(-1),
            };
            Some(if text == *value { 1 } else { -1 })
        })
        .sum()
}
