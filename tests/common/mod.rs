pub mod client;
pub mod offers;
