ALTER TABLE cqrs_outbox RESET (fillfactor);
