#!/bin/sh
echo "hello from app $(cat VERSION)"
