"""Pipeline definitions (index, finetune), the `ragtune` command and the compiled YAML for the Kubeflow UI."""
