//! The HTML pages of the monolith: home, a paged catalog listing, product pages, and error pages.
//!
//! `routes` calls these and wraps the text in a response. They are pure functions of a `Catalog` and a
//! product so they can be tested without a socket. The look is deliberately 2009: tables, a grey
//! background, Verdana. These are the routes Ficus keeps sending to the legacy app while the GTIN route
//! moves away.

use std::fmt::Write;

use crate::data::{Catalog, Product};
use crate::gs1::Kind;

/// Products per catalog page.
pub const PER_PAGE: u64 = 50;

/// The number of catalog pages (at least one, so an empty catalog still has page 1).
pub fn page_count(catalog: &Catalog) -> u64 {
    catalog.len().div_ceil(PER_PAGE).max(1)
}

pub fn home(catalog: &Catalog) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>Welcome to the ACME Retail Product Catalog</h2>\n\
         <p>The catalog lists <b>{}</b> products.</p>\n\
         <ul>\n\
         <li><a href=\"/catalog\">Browse the catalog</a></li>\n\
         <li><a href=\"/products/100000001\">Product of the week</a></li>\n\
         <li><a href=\"/stores/1/gtins/123456789012\">GTIN lookup (12-digit UPC only)</a></li>\n\
         <li><a href=\"/export\">Bulk export</a> (large)</li>\n\
         </ul>\n",
        catalog.len()
    );
    layout("Home", &body)
}

/// Catalog page `page` (1-based), or `None` when there is no such page.
pub fn catalog_page(catalog: &Catalog, page: u64) -> Option<String> {
    let pages = page_count(catalog);
    if page == 0 || page > pages {
        return None;
    }
    let first = (page - 1) * PER_PAGE;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>Catalog</h2>\n<p>Page {page} of {pages}</p>\n\
         <table border=\"1\" cellspacing=\"0\" cellpadding=\"3\" width=\"100%\">\n\
         <tr bgcolor=\"#336699\"><th><font color=\"white\">Item</font></th>\
         <th><font color=\"white\">UPC/EAN</font></th><th><font color=\"white\">Description</font></th>\
         <th><font color=\"white\">Brand</font></th><th><font color=\"white\">Dept</font></th>\
         <th><font color=\"white\">Price</font></th></tr>\n"
    );
    for (n, p) in (first..first + PER_PAGE).map_while(|i| catalog.product(i)).enumerate() {
        let shade = if n % 2 == 0 { "#ffffff" } else { "#eef3f8" };
        let _ = writeln!(
            body,
            "<tr bgcolor=\"{shade}\"><td><a href=\"/products/{item}\">{item}</a></td><td>{code}</td>\
             <td>{desc}</td><td>{brand}</td><td>{dept}</td><td align=\"right\">${price}</td></tr>",
            item = p.item_no,
            code = p.code,
            desc = escape(&p.desc.to_string()),
            brand = escape(p.brand),
            dept = p.dept.code,
            price = p.price,
        );
    }
    body.push_str("</table>\n<p>");
    if page > 1 {
        let _ = write!(
            body,
            "<a href=\"/catalog?page=1\">&laquo; First</a> | <a href=\"/catalog?page={}\">&lsaquo; Prev</a>",
            page - 1
        );
    }
    if page > 1 && page < pages {
        body.push_str(" | ");
    }
    if page < pages {
        let _ = write!(
            body,
            "<a href=\"/catalog?page={}\">Next &rsaquo;</a> | <a href=\"/catalog?page={pages}\">Last &raquo;</a>",
            page + 1
        );
    }
    body.push_str("</p>\n");
    Some(layout(&format!("Catalog page {page}"), &body))
}

pub fn product(p: &Product) -> String {
    let desc = escape(&p.desc.to_string());
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>{desc}</h2>\n\
         <table border=\"1\" cellspacing=\"0\" cellpadding=\"4\">\n\
         <tr><td bgcolor=\"#dde6ef\"><b>Item number</b></td><td>{item}</td></tr>\n\
         <tr><td bgcolor=\"#dde6ef\"><b>{label}</b></td><td>{code}</td></tr>\n\
         <tr><td bgcolor=\"#dde6ef\"><b>Brand</b></td><td>{brand}</td></tr>\n\
         <tr><td bgcolor=\"#dde6ef\"><b>Department</b></td><td>{dept_name} ({dept})</td></tr>\n\
         <tr><td bgcolor=\"#dde6ef\"><b>Price</b></td><td>${price}</td></tr>\n\
         <tr><td bgcolor=\"#dde6ef\"><b>Last updated</b></td><td>{updated}</td></tr>\n\
         </table>\n",
        item = p.item_no,
        label = match p.code.kind() {
            Kind::Upc => "UPC",
            Kind::Ean13 => "EAN",
        },
        code = p.code,
        brand = escape(p.brand),
        dept_name = escape(p.dept.name),
        dept = p.dept.code,
        price = p.price,
        updated = p.updated,
    );
    if p.code.kind() == Kind::Upc {
        let _ = writeln!(body, "<p><a href=\"/stores/1/gtins/{}\">GTIN lookup for store 1</a></p>", p.code);
    } else {
        body.push_str(
            "<p><i>This product has an EAN-13 barcode. The GTIN lookup only accepts 12-digit UPCs.</i></p>\n",
        );
    }
    let page = p.index / PER_PAGE + 1;
    let _ = writeln!(body, "<p><a href=\"/catalog?page={page}\">&laquo; Back to the catalog</a></p>");
    layout(&desc, &body)
}

pub fn not_found(path: &str) -> String {
    let body = format!(
        "<h2>Page not found</h2>\n<p>The page <tt>{}</tt> does not exist.</p>\n\
         <p><a href=\"/\">Return to the home page</a></p>\n",
        escape(path)
    );
    layout("Not found", &body)
}

pub fn error(title: &str, message: &str) -> String {
    let body = format!(
        "<h2>{}</h2>\n<p>{}</p>\n<p><a href=\"/\">Return to the home page</a></p>\n",
        escape(title),
        escape(message)
    );
    layout(title, &body)
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n\
         <html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\n\
         <title>{title} - ACME Catalog 2009</title>\n</head>\n\
         <body bgcolor=\"#e8e8e8\" style=\"font-family: Verdana, Arial, sans-serif; font-size: 11px\">\n\
         <table width=\"800\" align=\"center\" bgcolor=\"#ffffff\" cellpadding=\"8\"><tr><td>\n\
         <table width=\"100%\" bgcolor=\"#003366\"><tr><td><font color=\"#ffffff\" size=\"5\">\
         <b>ACME Retail</b> Catalog 2009</font></td>\
         <td align=\"right\"><a href=\"/\"><font color=\"#ffcc00\">Home</font></a> \
         <a href=\"/catalog\"><font color=\"#ffcc00\">Catalog</font></a></td></tr></table>\n\
         {body}\
         <hr>\n<p align=\"center\"><font color=\"#888888\">&copy; 2009 ACME Retail IT. \
         Best viewed in Internet Explorer 8 at 1024x768.</font></p>\n\
         </td></tr></table>\n</body>\n</html>\n"
    )
}

/// HTML-escapes text that may have come from a request (the not-found path) or the word lists.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_pages_list_fifty_products_with_links() {
        let catalog = Catalog::new(1, 120).expect("size");
        assert_eq!(page_count(&catalog), 3);
        let first = catalog_page(&catalog, 1).expect("page 1");
        assert_eq!(first.matches("<a href=\"/products/").count(), 50);
        assert!(first.contains("<a href=\"/products/100000001\">100000001</a>"));
        assert!(first.contains("Next &rsaquo;"));
        assert!(!first.contains("Prev"));
        let last = catalog_page(&catalog, 3).expect("page 3");
        assert_eq!(last.matches("<a href=\"/products/").count(), 20);
        assert!(last.contains("Prev") && !last.contains("Next"));
        assert!(catalog_page(&catalog, 0).is_none());
        assert!(catalog_page(&catalog, 4).is_none());
        let empty = Catalog::new(1, 0).expect("size");
        assert!(catalog_page(&empty, 1).is_some());
    }

    #[test]
    fn product_page_shows_the_product() {
        let catalog = Catalog::new(1, 10).expect("size");
        let p = catalog.product(0).expect("demo");
        let html = product(&p);
        assert!(html.contains("Demo Product 123456789012"));
        assert!(html.contains("$1.99"));
        assert!(html.contains("2024-01-31"));
        assert!(html.contains("/stores/1/gtins/123456789012"));
        let book = product(&catalog.product(3).expect("demo book"));
        assert!(book.contains("9780471117094") && book.contains("only accepts 12-digit"));
    }

    #[test]
    fn request_text_is_escaped() {
        let html = not_found("/<script>alert('x')</script>");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)"));
    }
}
