DROP TABLE backup_slots;
