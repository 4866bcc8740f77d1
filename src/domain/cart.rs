//! The cart: which products, how many of each. Prices and availability are not stored here;
//! they are read from the catalog whenever the cart is shown.

use serde::{Deserialize, Serialize};

use super::ids::ProductId;

/// Most distinct products in one cart.
pub const MAX_LINES: usize = 50;
/// Most units of one product in one cart.
pub const MAX_QUANTITY: u32 = 99;

/// A quantity of one product: 1..=[`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "u32", into = "u32")]
#[schema(value_type = u32, minimum = 1, maximum = 99)]
pub struct Quantity(u32);

impl Quantity {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Quantity {
    type Error = CartError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        if (1..=MAX_QUANTITY).contains(&n) {
            Ok(Quantity(n))
        } else {
            Err(CartError::QuantityOutOfRange(n))
        }
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartLine {
    #[schema(value_type = String, format = Uuid)]
    pub product_id: ProductId,
    pub quantity: Quantity,
}

/// The contents of a cart, lines in the order they were first added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cart {
    pub lines: Vec<CartLine>,
}

/// A change to a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartCommand {
    /// Adds units of a product (to an existing line or as a new line).
    Add {
        product_id: ProductId,
        quantity: Quantity,
    },
    /// Sets the quantity of a product already in the cart.
    Set {
        product_id: ProductId,
        quantity: Quantity,
    },
    /// Removes a product's line.
    Remove { product_id: ProductId },
    /// Empties the cart.
    Clear,
    /// Adds another cart's lines (a guest cart merged into the customer's on login):
    /// quantities of a product add up to at most [`MAX_QUANTITY`], and lines beyond
    /// [`MAX_LINES`] are left out.
    Merge { lines: Vec<CartLine> },
}

/// Why a cart change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error("quantity must be between 1 and {MAX_QUANTITY}, got {0}")]
    QuantityOutOfRange(u32),
    #[error("a cart holds at most {MAX_LINES} different products")]
    TooManyLines,
    #[error("product {0} is not in the cart")]
    NotInCart(ProductId),
}

impl Cart {
    /// Applies a command, or explains why it cannot be applied (leaving the cart unchanged).
    pub fn apply(&mut self, command: &CartCommand) -> Result<(), CartError> {
        match command {
            CartCommand::Add {
                product_id,
                quantity,
            } => {
                if let Some(line) = self.line_mut(*product_id) {
                    let total = line.quantity.get() + quantity.get();
                    line.quantity = Quantity::try_from(total)?;
                } else if self.lines.len() >= MAX_LINES {
                    return Err(CartError::TooManyLines);
                } else {
                    self.lines.push(CartLine {
                        product_id: *product_id,
                        quantity: *quantity,
                    });
                }
            }
            CartCommand::Set {
                product_id,
                quantity,
            } => {
                self.line_mut(*product_id)
                    .ok_or(CartError::NotInCart(*product_id))?
                    .quantity = *quantity;
            }
            CartCommand::Remove { product_id } => {
                let before = self.lines.len();
                self.lines.retain(|l| l.product_id != *product_id);
                if self.lines.len() == before {
                    return Err(CartError::NotInCart(*product_id));
                }
            }
            CartCommand::Clear => self.lines.clear(),
            CartCommand::Merge { lines } => {
                for incoming in lines {
                    if let Some(line) = self.line_mut(incoming.product_id) {
                        let total =
                            (line.quantity.get() + incoming.quantity.get()).min(MAX_QUANTITY);
                        line.quantity = Quantity::try_from(total)?;
                    } else if self.lines.len() < MAX_LINES {
                        self.lines.push(incoming.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Units of a product in the cart (0 when absent).
    pub fn quantity_of(&self, product_id: ProductId) -> u32 {
        self.lines
            .iter()
            .find(|l| l.product_id == product_id)
            .map_or(0, |l| l.quantity.get())
    }

    fn line_mut(&mut self, product_id: ProductId) -> Option<&mut CartLine> {
        self.lines.iter_mut().find(|l| l.product_id == product_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qty(n: u32) -> Quantity {
        Quantity::try_from(n).unwrap()
    }

    #[test]
    fn adding_twice_sums_the_quantities_on_one_line() {
        let mut cart = Cart::default();
        let p = ProductId::new();
        cart.apply(&CartCommand::Add {
            product_id: p,
            quantity: qty(2),
        })
        .unwrap();
        cart.apply(&CartCommand::Add {
            product_id: p,
            quantity: qty(3),
        })
        .unwrap();
        assert_eq!(cart.lines.len(), 1);
        assert_eq!(cart.quantity_of(p), 5);
    }

    #[test]
    fn a_refused_change_leaves_the_cart_unchanged() {
        let mut cart = Cart::default();
        let p = ProductId::new();
        cart.apply(&CartCommand::Add {
            product_id: p,
            quantity: qty(90),
        })
        .unwrap();
        let before = cart.clone();
        let err = cart
            .apply(&CartCommand::Add {
                product_id: p,
                quantity: qty(10),
            })
            .unwrap_err();
        assert_eq!(err, CartError::QuantityOutOfRange(100));
        assert_eq!(cart, before);
        let err = cart
            .apply(&CartCommand::Remove {
                product_id: ProductId::new(),
            })
            .unwrap_err();
        assert!(matches!(err, CartError::NotInCart(_)));
        assert_eq!(cart, before);
    }

    #[test]
    fn merging_adds_lines_and_caps_quantities() {
        let (a, b) = (ProductId::new(), ProductId::new());
        let mut mine = Cart::default();
        mine.apply(&CartCommand::Add {
            product_id: a,
            quantity: qty(90),
        })
        .unwrap();
        let guest = vec![
            CartLine {
                product_id: a,
                quantity: qty(20),
            },
            CartLine {
                product_id: b,
                quantity: qty(2),
            },
        ];
        mine.apply(&CartCommand::Merge { lines: guest }).unwrap();
        assert_eq!(mine.quantity_of(a), MAX_QUANTITY);
        assert_eq!(mine.quantity_of(b), 2);
    }

    #[test]
    fn the_line_limit_holds() {
        let mut cart = Cart::default();
        for _ in 0..MAX_LINES {
            cart.apply(&CartCommand::Add {
                product_id: ProductId::new(),
                quantity: qty(1),
            })
            .unwrap();
        }
        let err = cart
            .apply(&CartCommand::Add {
                product_id: ProductId::new(),
                quantity: qty(1),
            })
            .unwrap_err();
        assert_eq!(err, CartError::TooManyLines);
    }

    #[test]
    fn quantities_outside_the_range_do_not_parse() {
        assert!(Quantity::try_from(0).is_err());
        assert!(Quantity::try_from(MAX_QUANTITY + 1).is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("7").unwrap().get(), 7);
    }
}
