//! Response envelopes: `{"data": ...}` for one resource, `{"data", "meta", "links"}` for pages.

use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Paging;

/// One resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

pub fn data<T>(data: T) -> axum::Json<Data<T>> {
    axum::Json(Data { data })
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub meta: PageMeta,
    pub links: PageLinks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageMeta {
    pub current_page: u32,
    pub per_page: u32,
    pub total: i64,
    pub last_page: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageLinks {
    pub first: String,
    pub last: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

/// Builds a page answer from the rows of `paging`'s page and the total count.
pub fn page<T>(paging: &Paging, data: Vec<T>, total: i64) -> axum::Json<Page<T>> {
    let per_page = paging.req.per_page;
    let last_page = u32::try_from(total.max(0))
        .unwrap_or(u32::MAX)
        .div_ceil(per_page)
        .max(1);
    let current = paging.req.page;
    axum::Json(Page {
        data,
        meta: PageMeta {
            current_page: current,
            per_page,
            total,
            last_page,
        },
        links: PageLinks {
            first: paging.link(1),
            last: paging.link(last_page),
            prev: (current > 1).then(|| paging.link((current - 1).min(last_page))),
            next: (current < last_page).then(|| paging.link(current + 1)),
        },
    })
}
