//! The word lists products are assembled from: departments (with their nouns, pack sizes and price ranges),
//! adjectives and brands.
//!
//! Only `data` reads these. They are plain constants so a product is a handful of indexes into them. No word
//! contains `|`, a newline or an HTML metacharacter, which the export format and the pages rely on (and a
//! test in `data` checks).

/// A department: a 4-letter legacy code, a display name, and what its products are made of.
#[derive(Debug, PartialEq, Eq)]
pub struct Dept {
    pub code: &'static str,
    pub name: &'static str,
    pub nouns: &'static [&'static str],
    pub sizes: &'static [&'static str],
    /// Shelf price range in cents, low inclusive, high exclusive.
    pub price_range: (u32, u32),
}

/// The departments generated products are spread over.
pub const DEPTS: &[Dept] = &[
    Dept {
        code: "GROC",
        name: "Grocery",
        nouns: &[
            "Spaghetti",
            "Long Grain Rice",
            "Peanut Butter",
            "Tomato Sauce",
            "Corn Flakes",
            "Olive Oil",
            "Ground Coffee",
            "Black Tea",
            "Flour",
            "Clover Honey",
            "Black Beans",
            "Chicken Broth",
        ],
        sizes: &["500g", "1kg", "12oz", "16oz", "2lb", "32oz"],
        price_range: (99, 1299),
    },
    Dept {
        code: "DARY",
        name: "Dairy",
        nouns: &[
            "Whole Milk",
            "Oat Milk",
            "Greek Yogurt",
            "Butter",
            "Cheddar",
            "Cream Cheese",
            "Large Eggs",
            "Sour Cream",
        ],
        sizes: &["1L", "2L", "500g", "12ct", "8oz", "1gal"],
        price_range: (129, 899),
    },
    Dept {
        code: "PROD",
        name: "Produce",
        nouns: &[
            "Gala Apples",
            "Bananas",
            "Baby Carrots",
            "Spinach",
            "Avocados",
            "Lemons",
            "Red Grapes",
            "Yellow Onions",
        ],
        sizes: &["1lb", "2lb", "3lb", "5ct", "bag"],
        price_range: (79, 699),
    },
    Dept {
        code: "BAKE",
        name: "Bakery",
        nouns: &["Sourdough Bread", "Bagels", "Blueberry Muffins", "Flour Tortillas", "Croissants", "Dinner Rolls"],
        sizes: &["6ct", "8ct", "12ct", "24oz"],
        price_range: (149, 799),
    },
    Dept {
        code: "FROZ",
        name: "Frozen",
        nouns: &["Pepperoni Pizza", "Green Peas", "Vanilla Ice Cream", "Waffles", "Fish Sticks", "Mixed Vegetables"],
        sizes: &["12oz", "16oz", "1qt", "24ct"],
        price_range: (199, 1099),
    },
    Dept {
        code: "MEAT",
        name: "Meat and Seafood",
        nouns: &["Chicken Breast", "Ground Beef", "Bacon", "Pork Chops", "Salmon Fillet", "Turkey Slices"],
        sizes: &["12oz", "1lb", "2lb", "3lb"],
        price_range: (399, 2499),
    },
    Dept {
        code: "BEVG",
        name: "Beverages",
        nouns: &["Orange Juice", "Sparkling Water", "Cola", "Iced Tea", "Lemonade", "Apple Juice"],
        sizes: &["1L", "2L", "12pk", "64oz", "6pk"],
        price_range: (99, 1199),
    },
    Dept {
        code: "SNAK",
        name: "Snacks",
        nouns: &["Potato Chips", "Pretzels", "Trail Mix", "Granola Bars", "Popcorn", "Tortilla Chips"],
        sizes: &["8oz", "10oz", "6ct", "family size"],
        price_range: (99, 699),
    },
    Dept {
        code: "HBCA",
        name: "Health and Beauty",
        nouns: &["Shampoo", "Toothpaste", "Hand Soap", "Sunscreen SPF 30", "Lip Balm", "Body Lotion"],
        sizes: &["2ct", "4oz", "6oz", "12oz"],
        price_range: (149, 1999),
    },
    Dept {
        code: "HOME",
        name: "Household",
        nouns: &["Paper Towels", "Dish Soap", "Laundry Detergent", "Trash Bags", "Light Bulbs", "Sponges"],
        sizes: &["4pk", "6 roll", "24oz", "40ct"],
        price_range: (199, 2999),
    },
    Dept {
        code: "PETS",
        name: "Pet Supplies",
        nouns: &["Dry Dog Food", "Cat Litter", "Cat Treats", "Dog Biscuits"],
        sizes: &["3oz", "5lb", "20lb"],
        price_range: (199, 3999),
    },
];

/// Books only hold the fixed demo book; generated products never land here.
pub const BOOKS: Dept =
    Dept { code: "BOOK", name: "Books", nouns: &["Paperback"], sizes: &["each"], price_range: (499, 5999) };

pub const ADJECTIVES: &[&str] = &[
    "Organic",
    "Classic",
    "Family Size",
    "Low Fat",
    "Fresh",
    "Premium",
    "Value",
    "Original",
    "Lite",
    "Natural",
    "Homestyle",
    "Extra",
];

/// Brand names, upper case as the export's `BRAND_NM` wants them.
pub const BRANDS: &[&str] = &[
    "ACME",
    "NORTHFIELD",
    "SUNVALE",
    "GREENACRE",
    "HILLCREST",
    "BAYSIDE",
    "REDBARN",
    "KESTREL",
    "MAPLETON",
    "OAKRIDGE",
    "SILVERLAKE",
    "PRAIRIE",
    "HARBOR",
    "GOLDLEAF",
    "VALUEMART",
    "BRIGHTWAY",
];
