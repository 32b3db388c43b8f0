//! DNS for `clusterset.local` (see `docs/services.md`): to be built.
