"""tunesmith.assets"""
