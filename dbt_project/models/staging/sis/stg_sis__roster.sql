-- A table, not a view: three models and four tests read it, and a view would clean every value of
-- the file again for each of them.
{{ config(materialized='table') }}

with

source as (

    select * from {{ source('sis', 'roster') }}

),

final as (

    select
        line_number,
        {{ clean_text('first_name') }} as first_name,
        {{ clean_text('last_name') }} as last_name,
        {{ text_key('email') }} as email,
        {{ clean_text('user_id') }} as user_id,
        {{ text_key('user_login') }} as user_login,
        {{ clean_text('graduation') }} as graduation,
        {{ clean_text('stakeholders') }} as stakeholders,
        {{ clean_text('user_type') }} as user_type,
        {{ parse_flag('email_opt_out') }} as is_email_opt_out_requested,
        {{ parse_flag('delete_flag') }} as is_delete_requested

    from source

)

select * from final
