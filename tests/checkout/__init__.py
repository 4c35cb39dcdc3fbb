"""Tests of the Git checkout used by server-mode runs."""
