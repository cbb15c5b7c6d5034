//! The issuer's web pages: landing, signup, checkout success and cancel.
