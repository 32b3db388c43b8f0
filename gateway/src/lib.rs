pub mod netlink;
pub mod route;
